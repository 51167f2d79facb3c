//! Tests of the harness room (filled below).

//! Generated bindings for `wit/harness.wit`. Hidden from the rest of the crate:
//! the sandbox translates between these and [`crate::chat`] types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
    imports: { default: trappable },
});

//! BM25 ranking over product titles, types and attributes.
//!
//! The engine indexes what a shopper would type: the title, the product type
//! and every attribute phrase (purchase options are not indexed, as in
//! WebShop). Ranking is Okapi BM25 (k1 = 1.2, b = 0.75); ties go to the lower
//! product position, so a query always gives the same list.

use super::catalog::Catalog;

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Lowercase words: letters, digits and inner hyphens (`t-shirt`, `v-neck`).
pub(crate) fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .map(|word| word.trim_matches('-').to_ascii_lowercase())
        .filter(|word| !word.is_empty())
        .collect()
}

/// An inverted index over the catalog.
pub(crate) struct SearchIndex {
    /// Sorted term list; postings parallel to it.
    terms: Vec<String>,
    /// For each term: (product position, term frequency), by position.
    postings: Vec<Vec<(usize, u32)>>,
    doc_lengths: Vec<u32>,
    average_length: f64,
}

impl SearchIndex {
    pub(crate) fn build(catalog: &Catalog) -> SearchIndex {
        let mut pairs: Vec<(String, usize)> = Vec::new();
        let mut doc_lengths = Vec::with_capacity(catalog.products.len());
        for (position, product) in catalog.products.iter().enumerate() {
            let mut text = format!("{} {}", product.title, product.spec().name);
            for attribute in &product.attributes {
                text.push(' ');
                text.push_str(attribute);
            }
            let tokens = tokenize(&text);
            doc_lengths.push(tokens.len() as u32);
            pairs.extend(tokens.into_iter().map(|t| (t, position)));
        }
        pairs.sort();
        let mut terms: Vec<String> = Vec::new();
        let mut postings: Vec<Vec<(usize, u32)>> = Vec::new();
        for (term, position) in pairs {
            if terms.last() != Some(&term) {
                terms.push(term);
                postings.push(Vec::new());
            }
            let list = postings.last_mut().expect("pushed above");
            match list.last_mut() {
                Some((last, count)) if *last == position => *count += 1,
                _ => list.push((position, 1)),
            }
        }
        let total: u64 = doc_lengths.iter().map(|&l| l as u64).sum();
        let average_length = total as f64 / doc_lengths.len().max(1) as f64;
        SearchIndex { terms, postings, doc_lengths, average_length }
    }

    /// Product positions matching `query`, best first. Products sharing no
    /// word with the query are not returned.
    pub(crate) fn search(&self, query: &str) -> Vec<usize> {
        let mut query_terms = tokenize(query);
        query_terms.sort();
        query_terms.dedup();
        let documents = self.doc_lengths.len() as f64;
        let mut scores = vec![0.0f64; self.doc_lengths.len()];
        let mut hit = vec![false; self.doc_lengths.len()];
        for term in &query_terms {
            let Ok(index) = self.terms.binary_search(term) else { continue };
            let list = &self.postings[index];
            let frequency = list.len() as f64;
            let idf = (1.0 + (documents - frequency + 0.5) / (frequency + 0.5)).ln();
            for &(position, count) in list {
                let tf = count as f64;
                let norm = 1.0 - B + B * self.doc_lengths[position] as f64 / self.average_length;
                scores[position] += idf * tf * (K1 + 1.0) / (tf + K1 * norm);
                hit[position] = true;
            }
        }
        let mut ranked: Vec<usize> = (0..scores.len()).filter(|&i| hit[i]).collect();
        ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_keeps_inner_hyphens() {
        assert_eq!(tokenize("Slim-Fit T-Shirt, $18.99 -x-"), vec!["slim-fit", "t-shirt", "18", "99", "x"]);
    }

    #[test]
    fn ranking_prefers_products_with_more_query_words() {
        let catalog = Catalog::generate();
        let index = SearchIndex::build(&catalog);
        let hits = index.search("dark roast organic coffee");
        assert!(!hits.is_empty());
        let top = &catalog.products[hits[0]];
        assert_eq!(top.spec().name, "coffee");
        assert!(top.attributes.contains(&"dark roast") || top.attributes.contains(&"organic"));
        assert!(index.search("zzzz qqqq").is_empty());
        assert_eq!(index.search("coffee"), index.search("coffee"));
    }
}

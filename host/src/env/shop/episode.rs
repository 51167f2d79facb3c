//! One shopping episode: the page the agent is on, its selections, and the
//! text of every page it sees.
//!
//! Pages are plain text made to be parsed by eye: a results page lists
//! `[id] title $price` lines, a product page lists attributes and options,
//! and every failure starts with `Error:` and says what would have worked.

use std::fmt::Write as _;

use serde_json::Value;

use super::catalog::Catalog;
use super::search::SearchIndex;
use super::task::ShopTask;
use crate::chat::ToolCall;
use crate::env::{Observation, Score};

/// Results shown per page.
pub(crate) const PAGE_SIZE: usize = 10;

/// Where the agent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Page {
    /// The search page: nothing to click yet.
    Home,
    /// Page `n` (0-based) of the last search.
    Results(usize),
    /// A product page, by catalog position.
    Product(usize),
}

/// The last search: its query and every hit, best first.
#[derive(Clone, Debug)]
pub(crate) struct LastSearch {
    pub query: String,
    pub hits: Vec<usize>,
    /// The results page the agent last saw (0-based).
    pub page: usize,
}

impl LastSearch {
    pub(crate) fn pages(&self) -> usize {
        self.hits.len().div_ceil(PAGE_SIZE).max(1)
    }

    pub(crate) fn page_hits(&self, page: usize) -> &[usize] {
        let start = (page * PAGE_SIZE).min(self.hits.len());
        let end = (start + PAGE_SIZE).min(self.hits.len());
        &self.hits[start..end]
    }
}

/// The state of one task.
pub(crate) struct Episode {
    pub task: ShopTask,
    pub page: Page,
    pub search: Option<LastSearch>,
    /// Options chosen on the current product page.
    pub selected: Vec<(&'static str, &'static str)>,
    pub steps: u32,
    pub max_steps: u32,
    /// Set when the agent buys.
    pub purchase: Option<Score>,
}

impl Episode {
    pub(crate) fn new(task: ShopTask, max_steps: u32) -> Episode {
        Episode { task, page: Page::Home, search: None, selected: Vec::new(), steps: 0, max_steps, purchase: None }
    }

    pub(crate) fn done(&self) -> bool {
        self.purchase.is_some() || self.steps >= self.max_steps
    }

    /// Execute one tool call and describe what the agent now sees.
    pub(crate) fn step(&mut self, catalog: &Catalog, index: &SearchIndex, call: &ToolCall) -> Observation {
        if self.done() {
            return error("the task is over; no more actions are accepted.");
        }
        self.steps += 1;
        let args = match parse_arguments(&call.arguments) {
            Ok(args) => args,
            Err(reason) => {
                return error(&format!(
                    "the arguments of `{}` are not a valid JSON object ({reason}): {}",
                    call.name, call.arguments
                ))
            }
        };
        match call.name.as_str() {
            "search" => match string_arg(&args, "query") {
                Some(query) if !query.trim().is_empty() => self.search(catalog, index, query.trim()),
                _ => error("search needs a non-empty `query`, e.g. {\"query\": \"slim fit cotton t-shirt\"}."),
            },
            "next_page" => self.turn_page(catalog, 1),
            "prev_page" => self.turn_page(catalog, -1),
            "view" => match string_arg(&args, "id") {
                Some(id) => match catalog.find(id) {
                    Some(position) => {
                        self.page = Page::Product(position);
                        self.selected.clear();
                        ok(self.render_product(catalog, position))
                    }
                    None => {
                        error(&format!("no product with id `{id}`; ids look like P0123 and appear in search results."))
                    }
                },
                None => error("view needs an `id`, e.g. {\"id\": \"P0123\"}."),
            },
            "select" => self.select(catalog, &args),
            "back" => self.back(catalog),
            "buy" => match self.page {
                Page::Product(position) => {
                    let score = self.task.reward(catalog, position, &self.selected);
                    self.purchase = Some(score);
                    let product = &catalog.products[position];
                    ok(format!(
                        "Thank you for your purchase of {} ({}) with {}. The task is over.",
                        product.id,
                        product.title,
                        selection_text(&self.selected)
                    ))
                }
                _ => error("buy only works on a product page; view a product first."),
            },
            other => error(&format!(
                "unknown tool `{other}`. Available tools: search, next_page, prev_page, view, select, back, buy."
            )),
        }
    }

    fn search(&mut self, catalog: &Catalog, index: &SearchIndex, query: &str) -> Observation {
        let hits = index.search(query);
        self.search = Some(LastSearch { query: query.to_string(), hits, page: 0 });
        self.page = Page::Results(0);
        ok(self.render_results(catalog))
    }

    fn turn_page(&mut self, catalog: &Catalog, delta: isize) -> Observation {
        let (Page::Results(page), Some(search)) = (self.page, self.search.as_mut()) else {
            return error(
                "next_page and prev_page only work on a results page; search first (or go back to the results).",
            );
        };
        let target = page as isize + delta;
        if target < 0 {
            return error("already on the first page of results.");
        }
        if target as usize >= search.pages() {
            return error(&format!("already on the last page of results (page {} of {}).", page + 1, search.pages()));
        }
        search.page = target as usize;
        self.page = Page::Results(target as usize);
        ok(self.render_results(catalog))
    }

    fn select(&mut self, catalog: &Catalog, args: &Value) -> Observation {
        let Page::Product(position) = self.page else {
            return error("select only works on a product page; view a product first.");
        };
        let product = &catalog.products[position];
        let (Some(kind), Some(value)) = (string_arg(args, "option"), string_arg(args, "value")) else {
            return error("select needs `option` and `value`, e.g. {\"option\": \"size\", \"value\": \"large\"}.");
        };
        let kind = kind.trim().to_ascii_lowercase();
        let value = value.trim().to_ascii_lowercase();
        let Some((kind, values)) = product.options.iter().find(|(k, _)| *k == kind) else {
            let kinds: Vec<&str> = product.options.iter().map(|(k, _)| *k).collect();
            return error(&format!("this product has no option `{kind}`; its options are: {}.", kinds.join(", ")));
        };
        let Some(value) = values.iter().find(|v| **v == value) else {
            return error(&format!("`{value}` is not a {kind} of this product; choose one of: {}.", values.join(", ")));
        };
        self.selected.retain(|(k, _)| k != kind);
        self.selected.push((kind, value));
        ok(self.render_product(catalog, position))
    }

    fn back(&mut self, catalog: &Catalog) -> Observation {
        match (self.page, &self.search) {
            (Page::Product(_), Some(search)) => {
                self.page = Page::Results(search.page);
                self.selected.clear();
                ok(self.render_results(catalog))
            }
            (Page::Product(_), None) | (Page::Results(_), _) => {
                self.page = Page::Home;
                self.selected.clear();
                ok(home_text(catalog))
            }
            (Page::Home, _) => error("already on the search page; use search."),
        }
    }

    pub(crate) fn render_results(&self, catalog: &Catalog) -> String {
        let Some(search) = &self.search else { return home_text(catalog) };
        if search.hits.is_empty() {
            return format!("No results for \"{}\". Try other words.", search.query);
        }
        let mut text = format!(
            "Search results for \"{}\" (page {} of {}, {} results):",
            search.query,
            search.page + 1,
            search.pages(),
            search.hits.len()
        );
        for &position in search.page_hits(search.page) {
            let product = &catalog.products[position];
            let _ = write!(text, "\n[{}] {} {}", product.id, product.title, dollars(product.price_cents));
        }
        text
    }

    pub(crate) fn render_product(&self, catalog: &Catalog, position: usize) -> String {
        let product = &catalog.products[position];
        let mut text = format!(
            "Product {}: {}\nPrice: {}\nCategory: {} > {}\nAttributes: {}\nOptions:",
            product.id,
            product.title,
            dollars(product.price_cents),
            product.spec().category,
            product.spec().name,
            product.attributes.join(", ")
        );
        for (kind, values) in &product.options {
            let _ = write!(text, "\n  {kind}: {}", values.join(", "));
        }
        let _ = write!(text, "\nSelected: {}", selection_text(&self.selected));
        text
    }
}

/// The text of the search page.
pub(crate) fn home_text(catalog: &Catalog) -> String {
    format!(
        "You are on the search page of a web shop with {} products. Use search to find products, \
         view to open one, select to choose its options, and buy to purchase it.",
        catalog.products.len()
    )
}

pub(crate) fn dollars(cents: u32) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn selection_text(selected: &[(&str, &str)]) -> String {
    if selected.is_empty() {
        return "none".to_string();
    }
    selected.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// Empty arguments count as `{}`; anything else must be a JSON object.
fn parse_arguments(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("expected an object".to_string()),
        Err(err) => Err(err.to_string()),
    }
}

fn string_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

fn ok(content: String) -> Observation {
    Observation { content, is_error: false }
}

fn error(reason: &str) -> Observation {
    Observation { content: format!("Error: {reason}"), is_error: true }
}

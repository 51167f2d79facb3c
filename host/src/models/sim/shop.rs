//! How the simulated model shops: read the pages in view, then search, view,
//! check, select and buy.
//!
//! Everything it knows comes from the visible context: the goal line, the
//! results pages and product pages still in its window. A careful shopper
//! checks each product page against the goal (attributes, options offered,
//! price) and moves on to the next candidate when it does not match; pages
//! that fell out of the window are forgotten, so a small window means
//! re-viewing products it already rejected.

use serde_json::json;

use super::context::{Reading, Rolls, Seen};
use super::faults::Action;
use super::profile::Knobs;

/// Lowercase words: letters, digits and inner hyphens.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .map(|w| w.trim_matches('-').to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// `$18.99` -> 1899.
fn cents(text: &str) -> Option<u32> {
    let number = text.trim().trim_start_matches('$');
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let whole: u32 = whole.parse().ok()?;
    let fraction: u32 = format!("{:0<2}", &fraction[..fraction.len().min(2)]).parse().ok()?;
    Some(whole * 100 + fraction)
}

/// The instruction, parsed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ShopGoal {
    /// The words of `<attributes> <type>`.
    pub phrase: Vec<String>,
    pub options: Vec<(String, String)>,
    pub cap_cents: Option<u32>,
}

impl ShopGoal {
    pub(crate) fn parse(goal: &str) -> ShopGoal {
        let lower = goal.to_ascii_lowercase();
        let mut parts = lower.split(", ");
        let head = parts.next().unwrap_or_default();
        let head = ["i need a ", "i need an ", "i need ", "i am looking for a ", "i am looking for ", "find me a "]
            .iter()
            .find_map(|prefix| head.strip_prefix(prefix))
            .unwrap_or(head);
        let mut goal = ShopGoal { phrase: words(head), options: Vec::new(), cap_cents: None };
        for part in parts {
            let part = part.trim();
            if let Some(rest) = part.strip_prefix("price lower than ") {
                goal.cap_cents = rest.split_whitespace().next().and_then(cents);
            } else if let Some(rest) = part.strip_prefix("and price lower than ") {
                goal.cap_cents = rest.split_whitespace().next().and_then(cents);
            } else if let Some((kind, value)) = part.split_once(": ") {
                goal.options.push((kind.trim().to_string(), value.trim().to_string()));
            }
        }
        goal
    }

    fn query(&self) -> String {
        self.phrase.join(" ")
    }
}

/// One `[id] title $price` line.
#[derive(Clone, Debug)]
struct Item {
    id: String,
    title: String,
    price: Option<u32>,
}

#[derive(Clone, Debug)]
struct ResultsPage {
    query: String,
    page: usize,
    pages: usize,
    items: Vec<Item>,
}

/// A product page as far as it is visible (a trimmed page lacks lines).
#[derive(Clone, Debug, Default)]
struct ProductPage {
    id: String,
    title: String,
    price: Option<u32>,
    type_name: Option<String>,
    attributes: Option<Vec<String>>,
    options: Option<Vec<(String, Vec<String>)>>,
    selected: Vec<(String, String)>,
}

fn parse_results(text: &str) -> Option<ResultsPage> {
    if let Some(rest) = text.strip_prefix("No results for \"") {
        let query = rest.split('"').next().unwrap_or_default().to_string();
        return Some(ResultsPage { query, page: 0, pages: 1, items: Vec::new() });
    }
    let rest = text.strip_prefix("Search results for \"")?;
    let (query, rest) = rest.split_once("\" (page ")?;
    let (page, rest) = rest.split_once(" of ")?;
    let pages: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let items = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (id, rest) = line.strip_prefix('[')?.split_once("] ")?;
            let (title, price) = rest.rsplit_once(" $")?;
            Some(Item { id: id.to_string(), title: title.to_string(), price: cents(price) })
        })
        .collect();
    Some(ResultsPage {
        query: query.to_string(),
        page: page.trim().parse::<usize>().ok()?.saturating_sub(1),
        pages: pages.parse().unwrap_or(1),
        items,
    })
}

fn parse_product(text: &str) -> Option<ProductPage> {
    let first = text.lines().next()?;
    let (id, title) = first.strip_prefix("Product ")?.split_once(": ")?;
    let mut page = ProductPage { id: id.to_string(), title: title.to_string(), ..ProductPage::default() };
    let mut in_options = false;
    for line in text.lines().skip(1) {
        if let Some(price) = line.strip_prefix("Price: ") {
            page.price = cents(price);
        } else if let Some(category) = line.strip_prefix("Category: ") {
            page.type_name = category.rsplit(" > ").next().map(str::to_string);
        } else if let Some(attributes) = line.strip_prefix("Attributes: ") {
            page.attributes = Some(attributes.split(", ").map(str::to_string).collect());
        } else if line == "Options:" {
            in_options = true;
            page.options = Some(Vec::new());
        } else if let Some(selected) = line.strip_prefix("Selected: ") {
            in_options = false;
            if selected != "none" {
                page.selected = selected
                    .split(", ")
                    .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect();
            }
        } else if in_options {
            if let (Some(options), Some((kind, values))) = (page.options.as_mut(), line.trim().split_once(": ")) {
                options.push((kind.to_string(), values.split(", ").map(str::to_string).collect()));
            }
        }
    }
    Some(page)
}

enum Location {
    Home,
    Results,
    Product(ProductPage),
}

/// What the model believes about the shop, from the visible context.
struct Belief {
    location: Location,
    /// Every visible results line, first sighting first, no duplicates.
    items: Vec<Item>,
    /// Every visible product page, newest version per id, oldest first.
    products: Vec<ProductPage>,
    queries: Vec<String>,
    last_results: Option<ResultsPage>,
}

impl Belief {
    fn read(reading: &Reading) -> Belief {
        let mut belief = Belief {
            location: Location::Home,
            items: Vec::new(),
            products: Vec::new(),
            queries: Vec::new(),
            last_results: None,
        };
        for seen in &reading.seen {
            let text = match seen {
                Seen::User(text) | Seen::Result(text) => text.trim(),
            };
            if let Some(results) = parse_results(text) {
                for item in &results.items {
                    if !belief.items.iter().any(|i| i.id == item.id) {
                        belief.items.push(item.clone());
                    }
                }
                if !belief.queries.contains(&results.query) {
                    belief.queries.push(results.query.clone());
                }
                belief.last_results = Some(results);
                belief.location = Location::Results;
            } else if let Some(product) = parse_product(text) {
                belief.products.retain(|p| p.id != product.id);
                belief.products.push(product.clone());
                belief.location = Location::Product(product);
            } else if text.contains("You are on the search page") {
                belief.location = Location::Home;
            }
        }
        belief
    }
}

/// How a product page compares with the goal.
fn verify(goal: &ShopGoal, page: &ProductPage, careless: bool) -> Result<(), String> {
    if let (Some(price), Some(cap)) = (page.price, goal.cap_cents) {
        if price >= cap {
            return Err("it costs too much".to_string());
        }
    }
    let type_words = match &page.type_name {
        Some(type_name) => words(type_name),
        None => words(&page.title).into_iter().rev().take(1).collect(),
    };
    if !type_words.iter().all(|w| goal.phrase.contains(w)) {
        return Err("it is the wrong kind of product".to_string());
    }
    if careless {
        return Ok(());
    }
    let mut covered: Vec<&String> = goal.phrase.iter().filter(|w| type_words.contains(w)).collect();
    match &page.attributes {
        Some(attributes) => {
            for attribute in attributes {
                let phrase = words(attribute);
                let found =
                    !phrase.is_empty() && goal.phrase.windows(phrase.len()).any(|window| window == phrase.as_slice());
                if found {
                    covered.extend(goal.phrase.iter().filter(|w| phrase.contains(w)));
                }
            }
        }
        // A trimmed page: judge by the title.
        None => {
            let title = words(&page.title);
            covered.extend(goal.phrase.iter().filter(|w| title.contains(w)));
        }
    }
    if let Some(missing) = goal.phrase.iter().find(|w| !covered.contains(w)) {
        return Err(format!("it is not `{missing}`"));
    }
    if let Some(options) = &page.options {
        for (kind, value) in &goal.options {
            let offered = options.iter().any(|(k, values)| k == kind && values.contains(value));
            if !offered {
                return Err(format!("it does not come in {kind} {value}"));
            }
        }
    }
    Ok(())
}

/// Shared inputs of one decision.
pub(crate) struct Ctx<'a> {
    pub reading: &'a Reading,
    pub knobs: &'a Knobs,
    pub rolls: &'a Rolls,
    /// Dice that last the episode (for the careless trait).
    pub episode: Option<&'a Rolls>,
}

/// The ranked choices for the next call (never empty).
pub(crate) fn plan(ctx: &Ctx) -> Vec<Action> {
    let belief = Belief::read(ctx.reading);
    match ctx.reading.goal.as_deref().map(ShopGoal::parse) {
        Some(goal) if !goal.phrase.is_empty() => plan_with_goal(ctx, &goal, &belief),
        _ => plan_without_goal(ctx, &belief),
    }
}

fn search(query: String, thought: &str) -> Action {
    Action::new("search", json!({ "query": query }), thought)
}

fn view(id: &str, thought: String) -> Action {
    Action::new("view", json!({ "id": id }), thought)
}

fn plan_with_goal(ctx: &Ctx, goal: &ShopGoal, belief: &Belief) -> Vec<Action> {
    let finish = ctx.reading.steps_left().is_some() && ctx.rolls.chance("obey-budget", ctx.knobs.obey);
    let careless = ctx.episode.is_some_and(|e| e.chance("careless", ctx.knobs.careless_rate));
    let mut choices = Vec::new();
    if let Location::Product(page) = &belief.location {
        match verify(goal, page, careless) {
            Ok(()) => {
                let missing: Vec<&(String, String)> =
                    goal.options.iter().filter(|o| !page.selected.contains(o)).collect();
                let skip_options = careless && ctx.rolls.chance("skip-options", ctx.knobs.careless_rate);
                let no_time = finish && ctx.reading.steps_left().is_some_and(|left| (left as usize) <= missing.len());
                let buy = Action::new("buy", json!({}), "This product matches everything I need; buying it.");
                if let (Some((kind, value)), false, false) = (missing.first(), skip_options, no_time) {
                    choices.push(Action::new(
                        "select",
                        json!({ "option": kind, "value": value }),
                        format!("This product matches. Selecting {kind}: {value}."),
                    ));
                } else if !finish && ctx.rolls.chance("dither", ctx.knobs.dither_rate) {
                    choices.extend(browse_on(goal, belief, &page.id));
                }
                choices.push(buy);
                return choices;
            }
            Err(reason) => {
                choices.extend(next_candidate(
                    ctx,
                    goal,
                    belief,
                    finish,
                    Some(&format!("{} does not fit: {reason}.", page.id)),
                ));
            }
        }
    } else {
        choices.extend(next_candidate(ctx, goal, belief, finish, None));
    }
    choices.push(search(goal.query(), "Let me search for what I need."));
    choices
}

/// Keep browsing instead of buying (the "never stops" flaw).
fn browse_on(goal: &ShopGoal, belief: &Belief, current: &str) -> Vec<Action> {
    let thought = "This looks right, but let me compare a few more options first.";
    let other = ranked_candidates(goal, belief).into_iter().find(|item| item.id != current);
    match other {
        Some(item) => vec![view(&item.id, thought.to_string())],
        None => vec![Action::new("back", json!({}), thought)],
    }
}

/// Unviewed, affordable results, best title match first.
fn ranked_candidates<'a>(goal: &ShopGoal, belief: &'a Belief) -> Vec<&'a Item> {
    let mut ranked: Vec<(usize, usize, &Item)> = belief
        .items
        .iter()
        .enumerate()
        .filter(|(_, item)| !belief.products.iter().any(|p| p.id == item.id))
        .filter(|(_, item)| match (item.price, goal.cap_cents) {
            (Some(price), Some(cap)) => price < cap,
            _ => true,
        })
        .map(|(order, item)| {
            let title = words(&item.title);
            let overlap = goal.phrase.iter().filter(|w| title.contains(w)).count();
            (overlap, order, item)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, item)| item).collect()
}

fn next_candidate(ctx: &Ctx, goal: &ShopGoal, belief: &Belief, finish: bool, why: Option<&str>) -> Vec<Action> {
    let prefix = why.map(|w| format!("{w} ")).unwrap_or_default();
    let current = match &belief.location {
        Location::Product(page) => Some(page.id.as_str()),
        _ => None,
    };
    let careless = ctx.episode.is_some_and(|e| e.chance("careless", ctx.knobs.careless_rate));
    // A product already checked and found right: go back to it.
    let good =
        belief.products.iter().rev().find(|p| Some(p.id.as_str()) != current && verify(goal, p, careless).is_ok());
    if let Some(good) = good {
        return vec![view(&good.id, format!("{prefix}{} matched earlier; going back to it.", good.id))];
    }
    let mut choices = Vec::new();
    let candidates = ranked_candidates(goal, belief);
    if finish {
        // Out of time: take the most promising result.
        if let Some(best) = candidates.first() {
            choices.push(view(&best.id, format!("{prefix}Few steps left; checking the best result, {}.", best.id)));
        }
    }
    if let Some(best) = candidates.first() {
        choices.push(view(&best.id, format!("{prefix}Checking {} next.", best.id)));
    }
    if let Some(results) = &belief.last_results {
        if results.page + 1 < results.pages {
            if matches!(belief.location, Location::Results) {
                choices.push(Action::new("next_page", json!({}), format!("{prefix}Nothing here fits; next page.")));
            } else {
                choices.push(Action::new("back", json!({}), format!("{prefix}Back to the results.")));
            }
        }
    }
    for query in alternative_queries(goal) {
        if !belief.queries.contains(&query) {
            choices.push(search(query, &format!("{prefix}Searching for what I need.")));
            break;
        }
    }
    choices
}

/// The goal phrase, then shorter and option-flavoured variants.
fn alternative_queries(goal: &ShopGoal) -> Vec<String> {
    let mut queries = vec![goal.query()];
    if goal.phrase.len() > 2 {
        queries.push(goal.phrase[1..].join(" "));
    }
    if let Some((_, value)) = goal.options.first() {
        queries.push(format!("{} {value}", goal.query()));
    }
    queries
}

fn plan_without_goal(ctx: &Ctx, belief: &Belief) -> Vec<Action> {
    match &belief.location {
        Location::Product(page) => {
            vec![Action::new("buy", json!({}), format!("{} looks fine; buying it.", page.id))]
        }
        _ if !belief.items.is_empty() => {
            let item = &belief.items[ctx.rolls.below("aimless-view", belief.items.len())];
            vec![view(&item.id, format!("Let me look at {}.", item.id))]
        }
        _ => vec![search("best sellers".to_string(), "Let me see what the shop has.")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_parse() {
        let goal = ShopGoal::parse(
            "i need a slim fit cotton t-shirt, color: navy, size: large, price lower than 30.00 dollars",
        );
        assert_eq!(goal.phrase, vec!["slim", "fit", "cotton", "t-shirt"]);
        assert_eq!(goal.options, vec![("color".into(), "navy".into()), ("size".into(), "large".into())]);
        assert_eq!(goal.cap_cents, Some(3000));
    }

    #[test]
    fn pages_parse_and_verify() {
        let results = parse_results(
            "Search results for \"cotton t-shirt\" (page 2 of 6, 57 results):\n[P0123] Northwind Slim Fit Cotton T-Shirt $18.99\n[P0200] Cut o",
        )
        .unwrap();
        assert_eq!((results.page, results.pages, results.items.len()), (1, 6, 1));
        assert_eq!(results.items[0].price, Some(1899));
        let page = parse_product(
            "Product P0123: Northwind Slim Fit Cotton T-Shirt\nPrice: $18.99\nCategory: fashion > t-shirt\n\
             Attributes: slim fit, cotton, crew neck\nOptions:\n  color: black, navy\n  size: small, large\nSelected: color=navy",
        )
        .unwrap();
        assert_eq!(page.selected, vec![("color".to_string(), "navy".to_string())]);
        let goal = ShopGoal::parse("i need a slim fit cotton t-shirt, color: navy, price lower than 30.00 dollars");
        assert!(verify(&goal, &page, false).is_ok());
        let regular =
            ShopGoal::parse("i need a regular fit cotton t-shirt, color: navy, price lower than 30.00 dollars");
        assert!(verify(&regular, &page, false).is_err());
        assert!(verify(&regular, &page, true).is_ok(), "a careless shopper does not check attributes");
        let red = ShopGoal::parse("i need a slim fit cotton t-shirt, color: red, price lower than 30.00 dollars");
        assert!(verify(&red, &page, false).unwrap_err().contains("red"));
        let cheap = ShopGoal::parse("i need a slim fit cotton t-shirt, price lower than 10.00 dollars");
        assert!(verify(&cheap, &page, false).is_err());
    }
}

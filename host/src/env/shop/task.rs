//! Task generation and WebShop's reward.
//!
//! A task picks a target product and asks for two or three of its attributes,
//! one or two of its option values, and a price cap above its price. At least
//! one requested attribute (when the family allows it) is one a sibling lacks,
//! and option values are preferably ones a sibling lacks, so the near misses
//! matter. The target always satisfies its own goal, so every task is
//! solvable.
//!
//! The reward follows WebShop: `r_type × (attributes matched + options
//! matched + [price ok]) / (attributes asked + options asked + 1)`, where
//! `r_type` is 1 for the right product type, 0.5 for another type of the same
//! category and 0.1 otherwise. Success means a reward of exactly 1.

use super::catalog::{Catalog, TYPES};
use crate::env::rng::SplitMix64;
use crate::env::{Score, Split};

/// One shopping task.
#[derive(Clone, Debug)]
pub(crate) struct ShopTask {
    /// The product the task was built from; it satisfies the goal.
    pub target: usize,
    pub type_index: usize,
    pub attributes: Vec<&'static str>,
    /// (kind, value) pairs, in the order the goal states them.
    pub options: Vec<(&'static str, &'static str)>,
    /// A whole number of dollars, in cents.
    pub price_cap_cents: u32,
}

impl ShopTask {
    /// Task `index` of `split`; the same arguments give the same task.
    pub(crate) fn generate(catalog: &Catalog, split: Split, index: usize) -> ShopTask {
        let split_code = match split {
            Split::Train => 0,
            Split::Test => 1,
        };
        let mut rng = SplitMix64::from_parts("shop/task", &[split_code, index as u64]);
        // Not a family's overpriced member: with it as the target the price
        // cap would let every sibling through and the price trap vanish.
        let target = loop {
            let candidate = rng.below(catalog.products.len());
            let price = catalog.products[candidate].price_cents as u64;
            if !catalog.siblings(candidate).any(|s| (catalog.products[s].price_cents as u64) * 3 < price * 2) {
                break candidate;
            }
        };
        let product = &catalog.products[target];

        // Attribute positions a sibling differs in: asking for one of them
        // makes that sibling a near miss.
        let distinguishing: Vec<usize> = (0..product.attributes.len())
            .filter(|&p| catalog.siblings(target).any(|s| catalog.products[s].attributes[p] != product.attributes[p]))
            .collect();
        let wanted = 2 + rng.below(2);
        let mut positions: Vec<usize> = Vec::new();
        if !distinguishing.is_empty() {
            positions.push(*rng.pick(&distinguishing));
        }
        let mut rest: Vec<usize> = (0..product.attributes.len()).filter(|p| !positions.contains(p)).collect();
        rng.shuffle(&mut rest);
        positions.extend(rest.into_iter().take(wanted - positions.len()));
        rng.shuffle(&mut positions);
        let attributes = positions.iter().map(|&p| product.attributes[p]).collect();

        let mut kinds: Vec<usize> = (0..product.options.len()).collect();
        rng.shuffle(&mut kinds);
        let option_count = if kinds.len() > 1 && rng.chance(0.6) { 2 } else { 1 };
        let options = kinds
            .iter()
            .take(option_count)
            .map(|&k| {
                let (kind, values) = &product.options[k];
                let missing_in_sibling: Vec<&'static str> = values
                    .iter()
                    .copied()
                    .filter(|v| catalog.siblings(target).any(|s| !catalog.products[s].options[k].1.contains(v)))
                    .collect();
                let value = if !missing_in_sibling.is_empty() && rng.chance(0.5) {
                    *rng.pick(&missing_in_sibling)
                } else {
                    *rng.pick(values)
                };
                (*kind, value)
            })
            .collect();

        let price_dollars = product.price_cents as u64 / 100 + 1;
        let raised = price_dollars * rng.range(110, 140) / 100;
        let step = if raised < 20 { 5 } else { 10 };
        let cap_dollars = (raised / step + 1) * step;
        ShopTask {
            target,
            type_index: product.type_index,
            attributes,
            options,
            price_cap_cents: cap_dollars as u32 * 100,
        }
    }

    /// `i need a <attributes> <type>, <kind>: <value>, ..., price lower than <cap> dollars`.
    pub(crate) fn goal(&self) -> String {
        let mut goal = format!("i need a {} {}", self.attributes.join(" "), TYPES[self.type_index].name);
        for (kind, value) in &self.options {
            goal.push_str(&format!(", {kind}: {value}"));
        }
        goal.push_str(&format!(", price lower than {}.00 dollars", self.price_cap_cents / 100));
        goal
    }

    /// WebShop's score for buying `product` with `selected` options.
    pub(crate) fn reward(&self, catalog: &Catalog, product: usize, selected: &[(&'static str, &'static str)]) -> Score {
        let bought = &catalog.products[product];
        let r_type = if bought.type_index == self.type_index {
            1.0
        } else if bought.spec().category == TYPES[self.type_index].category {
            0.5
        } else {
            0.1
        };
        let attributes = self.attributes.iter().filter(|a| bought.attributes.contains(a)).count();
        let options = self.options.iter().filter(|option| selected.contains(option)).count();
        let price_ok = usize::from(bought.price_cents < self.price_cap_cents);
        let asked = self.attributes.len() + self.options.len() + 1;
        let reward = r_type * (attributes + options + price_ok) as f64 / asked as f64;
        Score { reward, success: reward >= 1.0 - 1e-9 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_scores_one_and_near_misses_score_less() {
        let catalog = Catalog::generate();
        for index in 0..50 {
            let task = ShopTask::generate(&catalog, Split::Train, index);
            let full = task.reward(&catalog, task.target, &task.options);
            assert!(full.success, "task {index}: {full:?}");
            let without_options = task.reward(&catalog, task.target, &[]);
            assert!(!without_options.success && without_options.reward > 0.0);
            assert!(catalog.products[task.target].price_cents < task.price_cap_cents);
        }
    }

    #[test]
    fn goal_text_follows_the_webshop_shape() {
        let catalog = Catalog::generate();
        let task = ShopTask::generate(&catalog, Split::Test, 3);
        let goal = task.goal();
        assert!(goal.starts_with("i need a "), "{goal}");
        assert!(goal.ends_with(" dollars"), "{goal}");
        assert!(goal.contains(TYPES[task.type_index].name));
    }

    #[test]
    fn wrong_type_scores_low() {
        let catalog = Catalog::generate();
        let task = ShopTask::generate(&catalog, Split::Train, 0);
        let other = (0..catalog.products.len())
            .find(|&i| catalog.products[i].spec().category != TYPES[task.type_index].category)
            .unwrap();
        assert!(task.reward(&catalog, other, &[]).reward <= 0.1 + 1e-9);
    }
}

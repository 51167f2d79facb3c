//! The generated product catalog.
//!
//! Products come in *families*: a base product plus near-miss variants that
//! differ from it in exactly one thing (one attribute, one missing option
//! value, or a much higher price). A product's title shows only its first two
//! attributes, so siblings often have identical titles and only the product
//! page tells them apart: that is the trap a careless agent falls into.
//!
//! Attributes are drawn per *slot* (material, fit, roast, ...), one value per
//! slot, so a product never says both "slim fit" and "regular fit".

use crate::env::rng::SplitMix64;

/// One product type: where it sits, which attribute slots and purchase
/// options it has, and its price range in dollars.
pub(crate) struct TypeSpec {
    pub name: &'static str,
    pub category: &'static str,
    pub slots: &'static [&'static [&'static str]],
    pub options: &'static [(&'static str, &'static [&'static str])],
    pub price: (u32, u32),
}

const SIZES: &[&str] = &["small", "medium", "large", "x-large"];
const PACKS: &[&str] = &["1 pack", "2 pack", "3 pack"];

/// The vocabulary. Attribute phrases never repeat within a type, brands never
/// collide with attribute words.
pub(crate) const TYPES: &[TypeSpec] = &[
    TypeSpec {
        name: "t-shirt",
        category: "fashion",
        slots: &[
            &["cotton", "polyester", "linen blend"],
            &["slim fit", "regular fit", "relaxed fit"],
            &["short sleeve", "long sleeve"],
            &["crew neck", "v-neck"],
            &["machine wash", "hand wash"],
        ],
        options: &[("color", &["black", "white", "navy", "heather grey", "red", "olive"]), ("size", SIZES)],
        price: (8, 30),
    },
    TypeSpec {
        name: "hoodie",
        category: "fashion",
        slots: &[
            &["fleece", "french terry", "sherpa lined"],
            &["zip up", "pullover"],
            &["oversized", "athletic fit"],
            &["kangaroo pocket", "thumb holes"],
            &["machine wash", "hand wash"],
        ],
        options: &[("color", &["black", "grey", "navy", "burgundy", "forest green", "white"]), ("size", SIZES)],
        price: (20, 60),
    },
    TypeSpec {
        name: "jeans",
        category: "fashion",
        slots: &[
            &["slim fit", "straight leg", "bootcut", "skinny"],
            &["high waist", "mid rise", "low rise"],
            &["stretch", "rigid denim"],
            &["distressed", "dark wash", "light wash"],
        ],
        options: &[("color", &["blue", "black", "indigo", "grey"]), ("size", &["28w", "30w", "32w", "34w", "36w"])],
        price: (25, 80),
    },
    TypeSpec {
        name: "sneakers",
        category: "fashion",
        slots: &[
            &["running", "walking", "training"],
            &["lightweight", "non slip", "memory foam"],
            &["breathable mesh", "leather", "knit"],
            &["lace up", "slip on"],
        ],
        options: &[("color", &["white", "black", "grey", "navy", "red"]), ("size", &["7", "8", "9", "10", "11", "12"])],
        price: (35, 120),
    },
    TypeSpec {
        name: "dress",
        category: "fashion",
        slots: &[
            &["floral", "solid", "striped", "polka dot"],
            &["mini", "midi", "maxi"],
            &["sleeveless", "short sleeve", "long sleeve"],
            &["chiffon", "cotton", "satin"],
            &["casual", "cocktail", "wrap"],
        ],
        options: &[("color", &["black", "red", "blue", "green", "pink", "ivory"]), ("size", SIZES)],
        price: (20, 90),
    },
    TypeSpec {
        name: "shampoo",
        category: "beauty",
        slots: &[
            &["sulfate free", "paraben free"],
            &["argan oil", "tea tree", "coconut oil", "biotin"],
            &["moisturizing", "volumizing", "anti dandruff", "color safe"],
            &["curly hair", "fine hair", "all hair types"],
        ],
        options: &[
            ("size", &["8 fl oz", "12 fl oz", "16 fl oz", "32 fl oz"]),
            ("scent", &["unscented", "lavender", "citrus", "mint"]),
        ],
        price: (6, 25),
    },
    TypeSpec {
        name: "lipstick",
        category: "beauty",
        slots: &[
            &["matte", "satin finish", "glossy"],
            &["long lasting", "transfer proof"],
            &["cruelty free", "vegan"],
            &["moisturizing", "waterproof"],
        ],
        options: &[("color", &["ruby red", "nude", "pink", "plum", "coral", "berry"]), ("pack", PACKS)],
        price: (5, 25),
    },
    TypeSpec {
        name: "face cream",
        category: "beauty",
        slots: &[
            &["anti aging", "brightening", "hydrating"],
            &["hyaluronic acid", "vitamin c", "retinol", "niacinamide"],
            &["fragrance free", "lightly scented"],
            &["day cream", "night cream"],
            &["spf 30", "spf 50"],
        ],
        options: &[("size", &["1 oz", "2 oz", "4 oz"])],
        price: (12, 60),
    },
    TypeSpec {
        name: "body lotion",
        category: "beauty",
        slots: &[
            &["dry skin", "sensitive skin", "all skin types"],
            &["shea butter", "cocoa butter", "aloe vera", "oatmeal"],
            &["non greasy", "fast absorbing"],
            &["cruelty free", "paraben free"],
        ],
        options: &[("size", &["8 oz", "16 oz", "32 oz"]), ("scent", &["unscented", "vanilla", "coconut", "lavender"])],
        price: (6, 30),
    },
    TypeSpec {
        name: "coffee",
        category: "grocery",
        slots: &[
            &["light roast", "medium roast", "dark roast"],
            &["whole bean", "ground", "single serve pods"],
            &["organic", "fair trade"],
            &["caffeinated", "decaf"],
            &["colombian", "ethiopian", "sumatra", "house blend"],
        ],
        options: &[("size", &["12 oz", "2 lb", "5 lb"]), ("flavor", &["original", "vanilla", "hazelnut", "caramel"])],
        price: (8, 35),
    },
    TypeSpec {
        name: "tea",
        category: "grocery",
        slots: &[
            &["green", "black", "herbal", "oolong"],
            &["loose leaf", "tea bags"],
            &["organic", "fair trade"],
            &["caffeine free", "caffeinated"],
            &["gluten free", "non gmo"],
        ],
        options: &[
            ("flavor", &["mint", "lemon", "chamomile", "ginger", "jasmine"]),
            ("size", &["20 count", "50 count", "100 count"]),
        ],
        price: (4, 20),
    },
    TypeSpec {
        name: "snack bar",
        category: "grocery",
        slots: &[
            &["high protein", "high fiber", "low sugar"],
            &["keto", "vegan", "paleo"],
            &["gluten free", "nut free", "dairy free"],
            &["chewy", "crunchy"],
        ],
        options: &[
            ("flavor", &["chocolate", "peanut butter", "almond", "mixed berry", "coconut"]),
            ("size", &["12 count", "24 count"]),
        ],
        price: (10, 35),
    },
    TypeSpec {
        name: "olive oil",
        category: "grocery",
        slots: &[
            &["extra virgin", "pure", "light tasting"],
            &["cold pressed", "refined"],
            &["organic", "non gmo"],
            &["italian", "greek", "spanish", "californian"],
            &["glass bottle", "tin can"],
        ],
        options: &[("size", &["500 ml", "1 liter", "3 liter"]), ("pack", PACKS)],
        price: (10, 45),
    },
    TypeSpec {
        name: "headphones",
        category: "electronics",
        slots: &[
            &["bluetooth", "wired"],
            &["over ear", "on ear", "in ear"],
            &["noise cancelling", "sweat resistant", "foldable"],
            &["built in microphone", "hi res audio"],
        ],
        options: &[("color", &["black", "white", "blue", "rose gold", "silver"])],
        price: (20, 200),
    },
    TypeSpec {
        name: "phone case",
        category: "electronics",
        slots: &[
            &["shockproof", "slim"],
            &["clear", "wallet", "leather", "silicone"],
            &["magnetic", "card holder", "kickstand"],
            &["raised edges", "anti scratch"],
        ],
        options: &[
            ("model", &["iphone 14", "iphone 15", "iphone 15 pro", "galaxy s23", "pixel 8"]),
            ("color", &["black", "clear", "navy", "pink", "purple"]),
        ],
        price: (8, 40),
    },
    TypeSpec {
        name: "charger",
        category: "electronics",
        slots: &[
            &["usb c", "lightning", "micro usb"],
            &["fast charging", "standard charging"],
            &["compact", "foldable plug", "braided cable"],
            &["dual port", "single port", "triple port"],
        ],
        options: &[("color", &["black", "white"]), ("pack", PACKS)],
        price: (8, 40),
    },
    TypeSpec {
        name: "speaker",
        category: "electronics",
        slots: &[
            &["bluetooth", "wifi"],
            &["waterproof", "shockproof", "splash resistant"],
            &["bass boost", "360 degree sound", "stereo pairing"],
            &["long battery life", "rechargeable"],
        ],
        options: &[("color", &["black", "blue", "red", "grey", "teal"])],
        price: (25, 150),
    },
    TypeSpec {
        name: "pillow",
        category: "home",
        slots: &[
            &["memory foam", "down alternative", "shredded latex", "feather"],
            &["firm", "medium firm", "soft"],
            &["cooling", "hypoallergenic"],
            &["bamboo cover", "cotton cover", "washable cover"],
        ],
        options: &[("size", &["standard", "queen", "king"]), ("pack", &["1 pack", "2 pack"])],
        price: (20, 80),
    },
    TypeSpec {
        name: "curtain",
        category: "home",
        slots: &[
            &["blackout", "room darkening", "sheer"],
            &["linen", "velvet", "polyester"],
            &["thermal insulated", "noise reducing"],
            &["grommet top", "rod pocket", "back tab"],
        ],
        options: &[
            ("size", &["52 x 63 inch", "52 x 84 inch", "52 x 95 inch"]),
            ("color", &["white", "grey", "navy", "beige", "sage green"]),
        ],
        price: (15, 60),
    },
    TypeSpec {
        name: "rug",
        category: "home",
        slots: &[
            &["low pile", "shag", "flatweave"],
            &["machine washable", "spot clean"],
            &["boho", "modern", "vintage", "geometric"],
            &["non slip", "rubber backed"],
        ],
        options: &[
            ("size", &["2 x 3 ft", "4 x 6 ft", "5 x 7 ft", "8 x 10 ft"]),
            ("color", &["grey", "blue", "beige", "multicolor", "ivory"]),
        ],
        price: (30, 200),
    },
    TypeSpec {
        name: "table lamp",
        category: "home",
        slots: &[
            &["warm white", "daylight"],
            &["dimmable", "touch control", "remote control"],
            &["usb port", "night light"],
            &["modern", "farmhouse", "mid century"],
        ],
        options: &[("color", &["black", "white", "brass", "silver"]), ("pack", &["1 pack", "2 pack"])],
        price: (18, 90),
    },
];

const BRANDS: &[&str] = &[
    "Northwind",
    "Bluepeak",
    "Ardent",
    "Lumora",
    "Kestrel",
    "Oakline",
    "Verano",
    "Halcyon",
    "Mistral",
    "Quillon",
    "Tidewell",
    "Embery",
    "Corvane",
    "Silvaro",
    "Brightfold",
    "Pinecrest",
    "Astera",
    "Marlowe",
    "Zephra",
    "Caldera",
];

/// Families per product type; with 5 members each that is 21 × 12 × 5 = 1,260 products.
const FAMILIES_PER_TYPE: usize = 12;
/// Attribute slots each product fills.
const SLOTS_PER_PRODUCT: usize = 4;
/// Fixed: the catalog is the same for every task and every seed.
const CATALOG_SEED: u64 = 0x5EED_0051_0900_2024;

/// One product of the catalog.
#[derive(Clone, Debug)]
pub(crate) struct Product {
    /// Display id, e.g. `P0042`.
    pub id: String,
    pub type_index: usize,
    /// Index of the family this product belongs to.
    pub family: usize,
    pub title: String,
    /// Attribute phrases, one per filled slot, in slot order.
    pub attributes: Vec<&'static str>,
    /// The slot each attribute came from, parallel to `attributes`.
    pub attribute_slots: Vec<usize>,
    /// Purchase options: kind and the values this product offers.
    pub options: Vec<(&'static str, Vec<&'static str>)>,
    pub price_cents: u32,
}

impl Product {
    pub(crate) fn spec(&self) -> &'static TypeSpec {
        &TYPES[self.type_index]
    }
}

/// Every product, indexed by position; ids are assigned in a shuffled order so
/// that siblings are not adjacent in id order.
pub(crate) struct Catalog {
    pub products: Vec<Product>,
}

impl Catalog {
    /// Build the catalog. Deterministic: it depends on nothing but constants.
    pub(crate) fn generate() -> Catalog {
        let mut rng = SplitMix64::new(CATALOG_SEED);
        let mut products = Vec::new();
        let mut family = 0;
        for (type_index, spec) in TYPES.iter().enumerate() {
            for _ in 0..FAMILIES_PER_TYPE {
                let base = base_product(&mut rng, type_index, spec, family);
                let variants = variants_of(&mut rng, &base);
                products.push(base);
                products.extend(variants);
                family += 1;
            }
        }
        // Shuffle, then number: ids carry no hint of family membership.
        rng.shuffle(&mut products);
        for (index, product) in products.iter_mut().enumerate() {
            product.id = format!("P{:04}", index + 1);
        }
        Catalog { products }
    }

    /// The product with display id `id` (case-insensitive, brackets allowed).
    pub(crate) fn find(&self, id: &str) -> Option<usize> {
        let id = id.trim().trim_start_matches('[').trim_end_matches(']').trim();
        let digits = id.strip_prefix('P').or_else(|| id.strip_prefix('p'))?;
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: usize = digits.parse().ok()?;
        (1..=self.products.len()).contains(&number).then(|| number - 1)
    }

    /// The other members of `product`'s family.
    pub(crate) fn siblings(&self, product: usize) -> impl Iterator<Item = usize> + '_ {
        let family = self.products[product].family;
        (0..self.products.len()).filter(move |&i| i != product && self.products[i].family == family)
    }
}

fn base_product(rng: &mut SplitMix64, type_index: usize, spec: &'static TypeSpec, family: usize) -> Product {
    let brand = *rng.pick(BRANDS);
    let mut slots: Vec<usize> = (0..spec.slots.len()).collect();
    rng.shuffle(&mut slots);
    slots.truncate(SLOTS_PER_PRODUCT.min(spec.slots.len()));
    let attributes = slots.iter().map(|&slot| *rng.pick(spec.slots[slot])).collect();
    let options = spec
        .options
        .iter()
        .map(|(kind, values)| {
            let mut offered: Vec<&'static str> = values.to_vec();
            rng.shuffle(&mut offered);
            let keep = rng.range(2, values.len() as u64) as usize;
            offered.truncate(keep);
            // Keep the vocabulary order on the page: easier to read.
            offered.sort_by_key(|v| values.iter().position(|x| x == v));
            (*kind, offered)
        })
        .collect();
    // Prices end in .99, as shops like them.
    let price_cents = rng.range(spec.price.0 as u64, spec.price.1 as u64) as u32 * 100 - 1;
    let mut product = Product {
        id: String::new(),
        type_index,
        family,
        title: String::new(),
        attributes,
        attribute_slots: slots,
        options,
        price_cents,
    };
    product.title = title_of(brand, &product);
    product
}

/// Four near misses: two with one attribute swapped, one lacking an option
/// value the base offers, one at a much higher price.
fn variants_of(rng: &mut SplitMix64, base: &Product) -> Vec<Product> {
    let spec = base.spec();
    let brand = base.title.split(' ').next().unwrap_or_default().to_string();
    let mut variants = Vec::new();
    let mut swap_positions: Vec<usize> = (0..base.attributes.len()).collect();
    rng.shuffle(&mut swap_positions);
    for &position in swap_positions.iter().take(2) {
        let slot = base.attribute_slots[position];
        let alternatives: Vec<&'static str> =
            spec.slots[slot].iter().copied().filter(|a| *a != base.attributes[position]).collect();
        let mut variant = base.clone();
        variant.attributes[position] = *rng.pick(&alternatives);
        variant.price_cents = jitter_price(rng, base.price_cents);
        variant.title = title_of(&brand, &variant);
        variants.push(variant);
    }
    // Missing one option value.
    let mut variant = base.clone();
    let kind_index = rng.below(variant.options.len());
    let values = &mut variant.options[kind_index].1;
    if values.len() > 1 {
        let drop = rng.below(values.len());
        values.remove(drop);
    }
    variant.price_cents = jitter_price(rng, base.price_cents);
    variants.push(variant);
    // Too expensive.
    let mut variant = base.clone();
    variant.price_cents = (base.price_cents as u64 * rng.range(170, 230) / 100) as u32 / 100 * 100 + 99;
    variants.push(variant);
    variants
}

fn jitter_price(rng: &mut SplitMix64, cents: u32) -> u32 {
    let factor = rng.range(90, 110);
    ((cents as u64 * factor / 100) as u32 / 100 * 100 + 99).max(199)
}

/// `Brand First Second Type`, title-cased: only the first two attributes show.
fn title_of(brand: &str, product: &Product) -> String {
    let mut words = vec![brand.to_string()];
    for phrase in product.attributes.iter().take(2).chain(std::iter::once(&product.spec().name)) {
        words.push(title_case(phrase));
    }
    words.join(" ")
}

fn title_case(phrase: &str) -> String {
    phrase
        .split(' ')
        .map(|word| {
            word.split('-')
                .map(|part| {
                    let mut chars = part.chars();
                    match chars.next() {
                        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                        None => String::new(),
                    }
                })
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_large_deterministic_and_well_formed() {
        let a = Catalog::generate();
        let b = Catalog::generate();
        assert!(a.products.len() >= 1000, "only {} products", a.products.len());
        for (x, y) in a.products.iter().zip(&b.products) {
            assert_eq!((&x.id, &x.title, x.price_cents), (&y.id, &y.title, y.price_cents));
        }
        for product in &a.products {
            assert_eq!(product.attributes.len(), SLOTS_PER_PRODUCT);
            assert!(product.price_cents >= 199);
            assert!(product.options.iter().all(|(_, values)| !values.is_empty()));
            assert_eq!(a.find(&product.id).map(|i| &a.products[i].id), Some(&product.id));
        }
        assert_eq!(a.find("p0001"), Some(0));
        assert_eq!(a.find("[P0002]"), Some(1));
        assert_eq!(a.find("P9999"), None);
        assert_eq!(a.find("banana"), None);
    }

    #[test]
    fn families_hold_near_misses_with_shared_titles() {
        let catalog = Catalog::generate();
        let same_title_siblings = (0..catalog.products.len())
            .filter(|&i| catalog.siblings(i).any(|j| catalog.products[j].title == catalog.products[i].title))
            .count();
        assert!(same_title_siblings > catalog.products.len() / 2);
    }

    #[test]
    fn titles_are_title_cased() {
        assert_eq!(title_case("t-shirt"), "T-Shirt");
        assert_eq!(title_case("slim fit"), "Slim Fit");
    }
}

//! Rooms and tasks for `house`: what is where, and what the agent must do.
//!
//! A task is built from its split and index alone: the task type cycles
//! through the six ALFWorld types (so each has an equal share), then a room
//! of a fitting kind is furnished, the task's objects are put away (often in
//! closed receptacles) and distractors are scattered. The target receptacle
//! never starts with a task object in it, so no task is solved at the start.

use crate::env::rng::SplitMix64;
use crate::env::Split;

/// The six ALFWorld task types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// `put a X in/on Y`
    Pick,
    /// `find two X and put them in/on Y`
    PickTwo,
    /// `put a clean X in/on Y`
    Clean,
    /// `put a hot X in/on Y`
    Heat,
    /// `put a cool X in/on Y`
    Cool,
    /// `look at X under the desklamp`
    Examine,
}

impl TaskKind {
    pub(crate) const ALL: [TaskKind; 6] =
        [TaskKind::Pick, TaskKind::PickTwo, TaskKind::Clean, TaskKind::Heat, TaskKind::Cool, TaskKind::Examine];

    /// The appliance that transforms the object, if any.
    pub(crate) fn appliance(self) -> Option<&'static str> {
        match self {
            TaskKind::Clean => Some("sinkbasin"),
            TaskKind::Heat => Some("microwave"),
            TaskKind::Cool => Some("fridge"),
            _ => None,
        }
    }
}

/// Receptacles with doors start closed.
pub(crate) fn openable(kind: &str) -> bool {
    matches!(kind, "cabinet" | "drawer" | "fridge" | "microwave" | "safe")
}

/// "in" for containers, "on" for surfaces.
pub(crate) fn preposition(kind: &str) -> &'static str {
    match kind {
        "cabinet" | "drawer" | "fridge" | "microwave" | "safe" | "sinkbasin" | "garbagecan" | "bathtubbasin" => "in",
        _ => "on",
    }
}

struct RoomTemplate {
    /// Receptacle kind and how many (inclusive range).
    receptacles: &'static [(&'static str, u32, u32)],
    objects: &'static [&'static str],
    /// Where a desklamp may stand (empty: no lamp).
    lamp_on: &'static [&'static str],
}

const KITCHEN: RoomTemplate = RoomTemplate {
    receptacles: &[
        ("cabinet", 3, 6),
        ("countertop", 1, 3),
        ("drawer", 2, 4),
        ("fridge", 1, 1),
        ("microwave", 1, 1),
        ("sinkbasin", 1, 1),
        ("stoveburner", 2, 4),
        ("shelf", 1, 3),
        ("diningtable", 1, 1),
        ("garbagecan", 1, 1),
    ],
    objects: &[
        "apple",
        "bowl",
        "bread",
        "butterknife",
        "cup",
        "dishsponge",
        "egg",
        "fork",
        "kettle",
        "knife",
        "ladle",
        "lettuce",
        "mug",
        "pan",
        "peppershaker",
        "plate",
        "pot",
        "potato",
        "saltshaker",
        "spatula",
        "spoon",
        "tomato",
        "winebottle",
    ],
    lamp_on: &[],
};

const BATHROOM: RoomTemplate = RoomTemplate {
    receptacles: &[
        ("cabinet", 2, 4),
        ("countertop", 1, 1),
        ("drawer", 1, 3),
        ("sinkbasin", 1, 2),
        ("shelf", 1, 2),
        ("toilet", 1, 1),
        ("bathtubbasin", 1, 1),
        ("garbagecan", 1, 1),
    ],
    objects: &["candle", "cloth", "soapbar", "soapbottle", "spraybottle", "toiletpaper", "tissuebox", "scrubbrush"],
    lamp_on: &[],
};

const BEDROOM: RoomTemplate = RoomTemplate {
    receptacles: &[
        ("bed", 1, 1),
        ("desk", 1, 1),
        ("dresser", 1, 1),
        ("sidetable", 1, 2),
        ("drawer", 2, 5),
        ("shelf", 1, 3),
        ("safe", 0, 1),
        ("garbagecan", 1, 1),
    ],
    objects: &["alarmclock", "book", "cd", "cellphone", "creditcard", "keychain", "laptop", "pen", "pencil", "pillow"],
    lamp_on: &["desk", "sidetable", "dresser"],
};

const LIVINGROOM: RoomTemplate = RoomTemplate {
    receptacles: &[
        ("sofa", 1, 1),
        ("armchair", 1, 1),
        ("coffeetable", 1, 1),
        ("sidetable", 1, 2),
        ("shelf", 1, 3),
        ("drawer", 1, 3),
        ("cabinet", 1, 2),
        ("garbagecan", 1, 1),
    ],
    objects: &[
        "book",
        "box",
        "creditcard",
        "keychain",
        "newspaper",
        "remotecontrol",
        "statue",
        "vase",
        "watch",
        "laptop",
    ],
    lamp_on: &["sidetable", "coffeetable"],
};

const CLEANABLE: &[&str] = &[
    "apple",
    "bowl",
    "butterknife",
    "cup",
    "fork",
    "kettle",
    "knife",
    "ladle",
    "lettuce",
    "mug",
    "pan",
    "plate",
    "pot",
    "potato",
    "spatula",
    "spoon",
    "tomato",
    "cloth",
    "soapbar",
];
const HEATABLE: &[&str] = &["apple", "bread", "cup", "egg", "mug", "plate", "potato", "tomato"];
const COOLABLE: &[&str] = &[
    "apple",
    "bowl",
    "bread",
    "cup",
    "egg",
    "lettuce",
    "mug",
    "pan",
    "plate",
    "pot",
    "potato",
    "tomato",
    "winebottle",
];
const EXAMINABLE: &[&str] = &[
    "alarmclock",
    "book",
    "cd",
    "cellphone",
    "creditcard",
    "keychain",
    "pen",
    "pencil",
    "newspaper",
    "remotecontrol",
    "statue",
    "vase",
    "watch",
];

/// A receptacle: `cabinet 3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Receptacle {
    pub kind: &'static str,
    pub number: u32,
}

impl Receptacle {
    pub(crate) fn name(&self) -> String {
        format!("{} {}", self.kind, self.number)
    }
}

/// An object as the task places it: `apple 2` in receptacle 5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub kind: &'static str,
    pub number: u32,
    pub receptacle: usize,
}

/// One task: the room and the goal.
#[derive(Clone, Debug)]
pub(crate) struct HouseTask {
    pub kind: TaskKind,
    /// The object type the goal is about.
    pub object: &'static str,
    /// The receptacle type it must end up in (not for `Examine`).
    pub target: Option<&'static str>,
    pub receptacles: Vec<Receptacle>,
    /// Objects, including the desklamp (which cannot be taken).
    pub objects: Vec<Placed>,
}

impl HouseTask {
    /// Task `index` of `split`. The type is `index mod 6`.
    pub(crate) fn generate(split: Split, index: usize) -> HouseTask {
        let split_code = match split {
            Split::Train => 0,
            Split::Test => 1,
        };
        let mut rng = SplitMix64::from_parts("house/task", &[split_code, index as u64]);
        let kind = TaskKind::ALL[index % TaskKind::ALL.len()];
        let template = match kind {
            TaskKind::Pick | TaskKind::PickTwo => *rng.pick(&[&KITCHEN, &BATHROOM, &BEDROOM, &LIVINGROOM]),
            TaskKind::Clean => *rng.pick(&[&KITCHEN, &KITCHEN, &BATHROOM]),
            TaskKind::Heat | TaskKind::Cool => &KITCHEN,
            TaskKind::Examine => *rng.pick(&[&BEDROOM, &LIVINGROOM]),
        };
        let mut receptacles = Vec::new();
        for &(recep_kind, lo, hi) in template.receptacles {
            for number in 1..=rng.range(lo as u64, hi as u64) as u32 {
                receptacles.push(Receptacle { kind: recep_kind, number });
            }
        }
        let pool: Vec<&'static str> = match kind {
            TaskKind::Clean => template.objects.iter().copied().filter(|o| CLEANABLE.contains(o)).collect(),
            TaskKind::Heat => template.objects.iter().copied().filter(|o| HEATABLE.contains(o)).collect(),
            TaskKind::Cool => template.objects.iter().copied().filter(|o| COOLABLE.contains(o)).collect(),
            TaskKind::Examine => template.objects.iter().copied().filter(|o| EXAMINABLE.contains(o)).collect(),
            TaskKind::Pick | TaskKind::PickTwo => template.objects.to_vec(),
        };
        let object = *rng.pick(&pool);

        // The target kind: anything but the task's own appliance.
        let target = (kind != TaskKind::Examine).then(|| {
            let mut kinds: Vec<&'static str> = template
                .receptacles
                .iter()
                .map(|r| r.0)
                .filter(|k| Some(*k) != kind.appliance() && receptacles.iter().any(|r| r.kind == *k))
                .collect();
            kinds.dedup();
            *rng.pick(&kinds)
        });

        let mut objects: Vec<Placed> = Vec::new();
        let place = |objects: &mut Vec<Placed>, object_kind: &'static str, receptacle: usize| {
            let number = objects.iter().filter(|o| o.kind == object_kind).count() as u32 + 1;
            objects.push(Placed { kind: object_kind, number, receptacle });
        };
        // Task objects: never in the target kind (nor in the task's appliance).
        let homes: Vec<usize> = (0..receptacles.len())
            .filter(|&i| Some(receptacles[i].kind) != target && Some(receptacles[i].kind) != kind.appliance())
            .collect();
        let copies = match kind {
            TaskKind::PickTwo => 2 + rng.below(2),
            _ => 1 + rng.below(2),
        };
        for _ in 0..copies {
            let home = *rng.pick(&homes);
            place(&mut objects, object, home);
        }
        // The lamp for examine tasks (and sometimes elsewhere, as furniture).
        if !template.lamp_on.is_empty() {
            let stands: Vec<usize> =
                (0..receptacles.len()).filter(|&i| template.lamp_on.contains(&receptacles[i].kind)).collect();
            let stand = *rng.pick(&stands);
            place(&mut objects, "desklamp", stand);
        }
        // Distractors, anywhere but never of the task's object type.
        let distractors: Vec<&'static str> = template.objects.iter().copied().filter(|o| *o != object).collect();
        for _ in 0..rng.range(6, 12) {
            let what = *rng.pick(&distractors);
            let home = rng.below(receptacles.len());
            place(&mut objects, what, home);
        }
        HouseTask { kind, object, target, receptacles, objects }
    }

    /// The instruction, in ALFWorld's words.
    pub(crate) fn goal(&self) -> String {
        let target = self.target.unwrap_or_default();
        let prep = preposition(target);
        match self.kind {
            TaskKind::Pick => format!("put a {} {prep} {target}.", self.object),
            TaskKind::PickTwo => format!("find two {} and put them {prep} {target}.", self.object),
            TaskKind::Clean => format!("put a clean {} {prep} {target}.", self.object),
            TaskKind::Heat => format!("put a hot {} {prep} {target}.", self.object),
            TaskKind::Cool => format!("put a cool {} {prep} {target}.", self.object),
            TaskKind::Examine => format!("look at {} under the desklamp.", self.object),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_deterministic_and_never_start_solved() {
        for index in 0..120 {
            let a = HouseTask::generate(Split::Train, index);
            let b = HouseTask::generate(Split::Train, index);
            assert_eq!((a.goal(), &a.objects, &a.receptacles), (b.goal(), &b.objects, &b.receptacles));
            assert_eq!(a.kind, TaskKind::ALL[index % 6]);
            let instances: Vec<&Placed> = a.objects.iter().filter(|o| o.kind == a.object).collect();
            assert!(!instances.is_empty());
            if a.kind == TaskKind::PickTwo {
                assert!(instances.len() >= 2);
            }
            for instance in instances {
                assert_ne!(Some(a.receptacles[instance.receptacle].kind), a.target, "task {index}");
            }
            if let Some(appliance) = a.kind.appliance() {
                assert!(a.receptacles.iter().any(|r| r.kind == appliance));
            }
            if a.kind == TaskKind::Examine {
                assert!(a.objects.iter().any(|o| o.kind == "desklamp"));
            }
        }
    }
}

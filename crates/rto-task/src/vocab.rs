//! The task's closed vocabulary and what every word *is*: its grammatical role and, for
//! content words, the classes the gold judge reasons about. Everything is a static table so
//! the vocabulary (and therefore token ids) is identical in every build.
//!
//! Why these classes: the judge's rules need words whose value depends on the prompt
//! (topic nouns, avoidable adjective classes, mood families) and on their neighbours
//! (adjective–noun agreement by noun kind), so that no single token reveals the score.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Special tokens, in id order: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, then the chat-role
/// markers the chat template emits.
pub const SPECIAL_TOKENS: [&str; 7] = ["<pad>", "<s>", "</s>", "<unk>", "<system>", "<user>", "<assistant>"];

/// What a noun stands for; adjective classes agree with two kinds each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Creature,
    Plant,
    Object,
    Place,
}

/// Mood families; `Calm`↔`Wild` and `Happy`↔`Sad` are opposites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mood {
    Calm,
    Wild,
    Happy,
    Sad,
}

impl Mood {
    pub const ALL: [Mood; 4] = [Mood::Calm, Mood::Wild, Mood::Happy, Mood::Sad];

    pub fn opposite(self) -> Mood {
        match self {
            Mood::Calm => Mood::Wild,
            Mood::Wild => Mood::Calm,
            Mood::Happy => Mood::Sad,
            Mood::Sad => Mood::Happy,
        }
    }

    /// The word a prompt names the mood with ("in a calm mood"); it is also the family's
    /// first adjective.
    pub fn name(self) -> &'static str {
        MOOD_WORDS[self as usize][0]
    }

    pub fn from_name(word: &str) -> Option<Mood> {
        Mood::ALL.into_iter().find(|m| m.name() == word)
    }
}

/// Adjective classes. Colors, sizes and textures can be forbidden by a prompt ("avoid colors").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdjClass {
    Color,
    Size,
    Texture,
    Mood(Mood),
}

impl AdjClass {
    /// Agreement rule: colors and textures describe plants and objects; sizes and moods
    /// describe creatures and places. A preference model must learn the kind of each of 128
    /// nouns and the class of each adjective to get these bigrams right.
    pub fn agrees_with(self, kind: Kind) -> bool {
        match self {
            AdjClass::Color | AdjClass::Texture => matches!(kind, Kind::Plant | Kind::Object),
            AdjClass::Size | AdjClass::Mood(_) => matches!(kind, Kind::Creature | Kind::Place),
        }
    }

    pub fn words(self) -> &'static [&'static str] {
        match self {
            AdjClass::Color => &COLORS,
            AdjClass::Size => &SIZES,
            AdjClass::Texture => &TEXTURES,
            AdjClass::Mood(m) => &MOOD_WORDS[m as usize],
        }
    }

    /// All classes, moods expanded (the order the generator samples from).
    pub const ALL: [AdjClass; 7] = [
        AdjClass::Color,
        AdjClass::Size,
        AdjClass::Texture,
        AdjClass::Mood(Mood::Calm),
        AdjClass::Mood(Mood::Wild),
        AdjClass::Mood(Mood::Happy),
        AdjClass::Mood(Mood::Sad),
    ];
}

/// The adjective classes a prompt may forbid, with the word the prompt uses for them.
pub const AVOIDABLE: [(AdjClass, &str); 3] =
    [(AdjClass::Color, "colors"), (AdjClass::Size, "sizes"), (AdjClass::Texture, "textures")];

/// The role a word plays; the judge and the generator dispatch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Special,
    Article,
    Connector,
    Preposition,
    Verb,
    /// Ends a response ("... near the reef tonight").
    Closer,
    Adjective(AdjClass),
    /// A topic's name (ocean, forest, ...): used in prompts, neutral in responses.
    TopicName(usize),
    Noun {
        topic: usize,
        kind: Kind,
    },
    /// A requested length in prompts ("write 24 words").
    Number,
    /// Instruction words that only prompts use (write, avoid, mood, ...).
    PromptWord,
}

impl Role {
    /// Content words may not repeat within a response; function words may.
    pub fn is_content(self) -> bool {
        matches!(self, Role::Verb | Role::Adjective(_) | Role::Noun { .. })
    }
}

pub const ARTICLES: [&str; 2] = ["the", "a"];
pub const CONNECTORS: [&str; 4] = ["and", "while", "then", "as"];
pub const PREPOSITIONS: [&str; 8] = ["near", "under", "over", "by", "beside", "across", "through", "along"];
pub const VERBS: [&str; 12] =
    ["rests", "waits", "glows", "moves", "sings", "sleeps", "falls", "rises", "turns", "grows", "shines", "drifts"];
pub const CLOSERS: [&str; 8] = ["done", "now", "today", "tonight", "again", "forever", "always", "soon"];
pub const COLORS: [&str; 8] = ["red", "blue", "green", "yellow", "white", "black", "brown", "gray"];
pub const SIZES: [&str; 6] = ["big", "small", "tiny", "huge", "tall", "short"];
pub const TEXTURES: [&str; 8] = ["soft", "rough", "smooth", "wet", "dry", "cold", "warm", "sharp"];
/// One row per `Mood`, in `Mood::ALL` order; the first word names the mood.
pub const MOOD_WORDS: [[&str; 4]; 4] = [
    ["calm", "quiet", "gentle", "still"],
    ["wild", "fierce", "loud", "restless"],
    ["happy", "bright", "cheerful", "merry"],
    ["sad", "lonely", "gloomy", "weary"],
];
/// Requested lengths a prompt may ask for (responses are 16..=48 words).
pub const LENGTHS: [u32; 7] = [16, 20, 24, 28, 32, 36, 40];
pub const PROMPT_WORDS: [&str; 19] = [
    "write", "compose", "give", "me", "words", "about", "in", "mood", "tone", "avoid", "word", "use", "no", "end",
    "finish", "with", "colors", "sizes", "textures",
];

/// A topic: its name and four nouns of each `Kind` (creature, plant, object, place).
pub struct Topic {
    pub name: &'static str,
    pub nouns: [[&'static str; 4]; 4],
}

pub const KINDS: [Kind; 4] = [Kind::Creature, Kind::Plant, Kind::Object, Kind::Place];

pub const TOPICS: [Topic; 8] = [
    Topic {
        name: "ocean",
        nouns: [
            ["whale", "fish", "crab", "gull"],
            ["kelp", "coral", "seaweed", "algae"],
            ["boat", "shell", "net", "anchor"],
            ["reef", "bay", "shore", "cove"],
        ],
    },
    Topic {
        name: "forest",
        nouns: [
            ["deer", "owl", "fox", "bear"],
            ["oak", "fern", "moss", "pine"],
            ["log", "axe", "acorn", "lantern"],
            ["glade", "grove", "creek", "hollow"],
        ],
    },
    Topic {
        name: "city",
        nouns: [
            ["pigeon", "rat", "dog", "cat"],
            ["ivy", "elm", "weed", "hedge"],
            ["car", "bus", "lamp", "sign"],
            ["street", "park", "plaza", "tower"],
        ],
    },
    Topic {
        name: "farm",
        nouns: [
            ["cow", "hen", "pig", "goat"],
            ["wheat", "corn", "hay", "barley"],
            ["tractor", "plow", "fence", "bucket"],
            ["barn", "field", "pasture", "orchard"],
        ],
    },
    Topic {
        name: "desert",
        nouns: [
            ["camel", "lizard", "snake", "scorpion"],
            ["cactus", "sage", "yucca", "thorn"],
            ["tent", "canteen", "compass", "rope"],
            ["dune", "oasis", "canyon", "mesa"],
        ],
    },
    Topic {
        name: "mountain",
        nouns: [
            ["eagle", "ram", "yak", "marmot"],
            ["lichen", "spruce", "heather", "edelweiss"],
            ["boot", "pick", "flag", "sled"],
            ["peak", "ridge", "cliff", "valley"],
        ],
    },
    Topic {
        name: "kitchen",
        nouns: [
            ["mouse", "fly", "ant", "cook"],
            ["basil", "mint", "garlic", "onion"],
            ["pot", "pan", "knife", "spoon"],
            ["pantry", "counter", "sink", "shelf"],
        ],
    },
    Topic {
        name: "garden",
        nouns: [
            ["bee", "worm", "snail", "robin"],
            ["rose", "daisy", "tulip", "clover"],
            ["hose", "rake", "trowel", "bench"],
            ["path", "pond", "patio", "shed"],
        ],
    },
];

impl Topic {
    /// All 16 nouns with their kinds.
    pub fn all_nouns(&self) -> impl Iterator<Item = (&'static str, Kind)> + '_ {
        KINDS.iter().zip(self.nouns.iter()).flat_map(|(&k, words)| words.iter().map(move |&w| (w, k)))
    }

    pub fn index_of(name: &str) -> Option<usize> {
        TOPICS.iter().position(|t| t.name == name)
    }
}

/// The vocabulary: words in id order and each word's role.
pub struct Vocab {
    pub words: Vec<&'static str>,
    roles: HashMap<&'static str, Role>,
}

impl Vocab {
    pub fn role(&self, word: &str) -> Option<Role> {
        self.roles.get(word).copied()
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// The one vocabulary, built on first use. Panics only if the static tables above contain a
/// duplicate word, which a unit test rules out.
pub fn vocab() -> &'static Vocab {
    static VOCAB: OnceLock<Vocab> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let mut entries: Vec<(&'static str, Role)> = Vec::new();
        entries.extend(SPECIAL_TOKENS.iter().map(|&w| (w, Role::Special)));
        entries.extend(ARTICLES.iter().map(|&w| (w, Role::Article)));
        entries.extend(CONNECTORS.iter().map(|&w| (w, Role::Connector)));
        entries.extend(PREPOSITIONS.iter().map(|&w| (w, Role::Preposition)));
        entries.extend(VERBS.iter().map(|&w| (w, Role::Verb)));
        entries.extend(CLOSERS.iter().map(|&w| (w, Role::Closer)));
        for class in AdjClass::ALL {
            entries.extend(class.words().iter().map(|&w| (w, Role::Adjective(class))));
        }
        for (t, topic) in TOPICS.iter().enumerate() {
            entries.push((topic.name, Role::TopicName(t)));
        }
        for (t, topic) in TOPICS.iter().enumerate() {
            entries.extend(topic.all_nouns().map(|(w, kind)| (w, Role::Noun { topic: t, kind })));
        }
        // Numbers are leaked 'static strings so the table stays `&'static str` throughout.
        for n in LENGTHS {
            let s: &'static str = Box::leak(n.to_string().into_boxed_str());
            entries.push((s, Role::Number));
        }
        entries.extend(PROMPT_WORDS.iter().map(|&w| (w, Role::PromptWord)));
        let mut roles = HashMap::new();
        for &(w, r) in &entries {
            assert!(roles.insert(w, r).is_none(), "word `{w}` listed twice in the task vocabulary");
        }
        Vocab { words: entries.iter().map(|&(w, _)| w).collect(), roles }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_small_unique_and_starts_with_specials() {
        let v = vocab();
        assert!(v.len() < 512, "{} words", v.len());
        assert_eq!(&v.words[..4], &["<pad>", "<s>", "</s>", "<unk>"]);
        assert_eq!(v.role("whale"), Some(Role::Noun { topic: 0, kind: Kind::Creature }));
        assert_eq!(v.role("calm"), Some(Role::Adjective(AdjClass::Mood(Mood::Calm))));
        assert_eq!(Mood::from_name("sad"), Some(Mood::Sad));
    }
}

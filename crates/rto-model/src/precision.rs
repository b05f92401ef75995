//! The precision a stage computes in (`--bf16`): the dtype models are held and run in.
//!
//! Whatever the precision, the quantities the algorithms read stay fp32: the logits are
//! upcast at the head (`batch::response_logprobs`), so log-probs, losses, advantages and token
//! rewards are computed in fp32, and a trained model's optimizer keeps fp32 master weights.

use tch::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    /// bf16 weights and activations (the DeepSpeed/OpenRLHF bf16 recipe).
    Bf16,
}

impl Precision {
    /// The precision of a `--bf16` flag.
    pub fn from_bf16_flag(bf16: bool) -> Self {
        if bf16 {
            Self::Bf16
        } else {
            Self::Fp32
        }
    }

    /// The dtype weights and activations are held in.
    pub fn kind(self) -> Kind {
        match self {
            Self::Fp32 => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
        }
    }

    /// Bytes of one weight or activation value.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Fp32 => 4,
            Self::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }
}

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

/// Whether this machine's CPU computes bf16 in hardware (x86: AVX-512 BF16 or AMX-BF16;
/// Arm: the BF16 extension), read from /proc/cpuinfo; None where that file is unreadable.
///
/// Without it libtorch still runs bf16, but converts around fp32 arithmetic: measured on a
/// 2-core AMD EPYC with AVX2 only (2026-12-03), the bench's bf16 annotate took 45 s where fp32
/// took 4.3 s, and a bf16 PPO run 58 s where fp32 took 5.5 s.
pub fn cpu_has_native_bf16() -> Option<bool> {
    std::fs::read_to_string("/proc/cpuinfo").ok().map(|text| cpuinfo_has_native_bf16(&text))
}

/// [`cpu_has_native_bf16`] of a /proc/cpuinfo text: the flags (x86) or Features (Arm) line of
/// its first processor names a bf16 instruction set.
pub fn cpuinfo_has_native_bf16(cpuinfo: &str) -> bool {
    let Some(line) = cpuinfo.lines().find(|l| l.starts_with("flags") || l.starts_with("Features")) else {
        return false;
    };
    let flags = line.split_once(':').map_or("", |(_, flags)| flags);
    flags.split_whitespace().any(|flag| matches!(flag, "avx512_bf16" | "amx_bf16" | "bf16"))
}

/// The warning a run in bf16 (`on_cpu`: on this machine's CPU) deserves, if any (see
/// [`cpu_has_native_bf16`]).
pub fn emulated_bf16_warning(precision: Precision, on_cpu: bool) -> Option<String> {
    if precision != Precision::Bf16 || !on_cpu || cpu_has_native_bf16() != Some(false) {
        return None;
    }
    Some(
        "--bf16 on a CPU without bf16 instructions (no avx512_bf16, amx_bf16 or bf16 in /proc/cpuinfo): \
         libtorch emulates them, about 10x slower than fp32 on the bench; drop --bf16 unless memory needs it"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_bf16_is_read_from_the_flags_line() {
        let sapphire = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n";
        let milan = "processor\t: 0\nflags\t\t: fpu fma avx avx2 f16c\nbugs\t\t: sysret_ss_attrs\n";
        let graviton3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n";
        let flag_elsewhere = "model name\t: bf16 marketing name\nflags\t\t: avx2\n";
        assert!(cpuinfo_has_native_bf16(sapphire));
        assert!(!cpuinfo_has_native_bf16(milan));
        assert!(cpuinfo_has_native_bf16(graviton3));
        assert!(!cpuinfo_has_native_bf16(flag_elsewhere));
        assert!(!cpuinfo_has_native_bf16(""));
    }

    #[test]
    fn only_a_cpu_bf16_run_can_be_warned_about() {
        assert_eq!(emulated_bf16_warning(Precision::Fp32, true), None);
        assert_eq!(emulated_bf16_warning(Precision::Bf16, false), None);
        let expected = cpu_has_native_bf16() == Some(false);
        assert_eq!(emulated_bf16_warning(Precision::Bf16, true).is_some(), expected);
    }
}

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

/// What serves libtorch's bf16 matmuls on this machine's CPU. libtorch sends them to oneDNN
/// when oneDNN may use AVX-512 (its `avx512_core`) or AVX2-VNNI-2, and otherwise to its own
/// fallback, a dot product per output element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Matmuls {
    /// oneDNN on bf16 instructions (AVX-512 BF16, AMX; Arm's BF16 extension).
    Native,
    /// oneDNN emulating bf16 with AVX-512 or AVX2-VNNI-2 instructions: blocked kernels.
    Emulated,
    /// libtorch's unblocked fallback: measured on a 2-core AMD EPYC with AVX2 only
    /// (2026-12-03), 80 % of a bf16 annotate's samples in `bf16_dot_with_fp32_arith` and
    /// `cpublas_gemm_impl`, the bench's annotate 45 s in bf16 against 4.3 s in fp32 and its
    /// PPO run 58 s against 5.5 s.
    Fallback,
}

/// [`Bf16Matmuls`] of this machine (None where /proc/cpuinfo is unreadable), with the cap a
/// `ONEDNN_MAX_CPU_ISA` (or `DNNL_MAX_CPU_ISA`) setting puts on oneDNN: reproducible mode's
/// `AVX2` pin sends bf16 matmuls to the fallback on every machine.
pub fn cpu_bf16_matmuls() -> Option<Bf16Matmuls> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let cap = std::env::var("ONEDNN_MAX_CPU_ISA").or_else(|_| std::env::var("DNNL_MAX_CPU_ISA")).ok();
    Some(bf16_matmuls_of(&cpuinfo, cap.as_deref()))
}

/// [`cpu_bf16_matmuls`] of a /proc/cpuinfo text (the flags line, x86, or Features line, Arm,
/// of its first processor) under an optional oneDNN ISA cap.
pub fn bf16_matmuls_of(cpuinfo: &str, onednn_max_isa: Option<&str>) -> Bf16Matmuls {
    let line = cpuinfo.lines().find(|l| l.starts_with("flags") || l.starts_with("Features")).unwrap_or("");
    let flags: Vec<&str> = line.split_once(':').map_or("", |(_, flags)| flags).split_whitespace().collect();
    let has = |flag: &str| flags.contains(&flag);
    if has("bf16") {
        return Bf16Matmuls::Native; // Arm: libtorch asks cpuinfo for the BF16 extension only
    }
    // The caps below AVX-512 (oneDNN's names, case-insensitive); AVX2_VNNI_2 keeps bf16.
    let capped = onednn_max_isa
        .map(|isa| matches!(isa.trim().to_ascii_uppercase().as_str(), "SSE41" | "AVX" | "AVX2" | "AVX2_VNNI"))
        .unwrap_or(false);
    let avx512_core = ["avx512f", "avx512bw", "avx512vl", "avx512dq"].iter().all(|f| has(f));
    let avx2_vnni_2 = has("avx_ne_convert") && has("avx_vnni_int8");
    if capped || !(avx512_core || avx2_vnni_2) {
        return Bf16Matmuls::Fallback;
    }
    if has("avx512_bf16") || has("amx_bf16") {
        Bf16Matmuls::Native
    } else {
        Bf16Matmuls::Emulated
    }
}

/// The warning a run in bf16 (`on_cpu`: on this machine's CPU) deserves, if any: when its
/// matmuls would go to libtorch's fallback (see [`Bf16Matmuls::Fallback`]).
pub fn slow_bf16_warning(precision: Precision, on_cpu: bool) -> Option<String> {
    if precision != Precision::Bf16 || !on_cpu || cpu_bf16_matmuls() != Some(Bf16Matmuls::Fallback) {
        return None;
    }
    Some(
        "--bf16 on a CPU where libtorch's bf16 matmuls fall back to unblocked loops (no AVX-512 or \
         AVX2-VNNI-2 for oneDNN, or ONEDNN_MAX_CPU_ISA caps it, as --reproducible does): about 10x \
         slower than fp32 on the bench; drop --bf16 unless memory needs it"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEN4: &str = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16\n";
    const SKYLAKE: &str = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512dq avx512cd avx512bw avx512vl\n";
    const ZEN3: &str = "processor\t: 0\nflags\t\t: fpu fma avx avx2 f16c\nbugs\t\t: sysret_ss_attrs\n";

    #[test]
    fn bf16_matmuls_follow_the_flags_and_the_onednn_cap() {
        use Bf16Matmuls::*;
        assert_eq!(bf16_matmuls_of(ZEN4, None), Native);
        assert_eq!(bf16_matmuls_of(ZEN4, Some("avx512_core_amx")), Native);
        assert_eq!(bf16_matmuls_of(ZEN4, Some("AVX2")), Fallback, "reproducible mode's pin");
        assert_eq!(bf16_matmuls_of(SKYLAKE, None), Emulated);
        assert_eq!(bf16_matmuls_of(ZEN3, None), Fallback);
        assert_eq!(bf16_matmuls_of("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", None), Native);
        let sierra_forest = "flags\t\t: avx2 avx_vnni avx_vnni_int8 avx_ne_convert\n";
        assert_eq!(bf16_matmuls_of(sierra_forest, None), Emulated);
        // Only the flags line counts, and half of AVX-512 is not avx512_core.
        assert_eq!(bf16_matmuls_of("model name\t: avx512_bf16 avx512f\nflags\t\t: avx2\n", None), Fallback);
        assert_eq!(bf16_matmuls_of("flags\t\t: avx512f avx512_bf16\n", None), Fallback);
        assert_eq!(bf16_matmuls_of("", None), Fallback);
    }

    #[test]
    fn only_a_cpu_bf16_run_can_be_warned_about() {
        assert_eq!(slow_bf16_warning(Precision::Fp32, true), None);
        assert_eq!(slow_bf16_warning(Precision::Bf16, false), None);
        let fallback = cpu_bf16_matmuls() == Some(Bf16Matmuls::Fallback);
        assert_eq!(slow_bf16_warning(Precision::Bf16, true).is_some(), fallback);
    }
}

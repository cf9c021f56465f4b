//! The closed choices of the configurations (`train.optimizer = "lamb"`...), as enums that
//! serialise to the words the TOML files use. Each lists its words (`NAMES`), so that a bad
//! value is refused with its key, its value and the accepted words (see `toml_file`).

use serde::{Deserialize, Serialize};

/// One closed choice: its words, in declaration order.
pub trait Choice: Sized + Copy + 'static {
    const NAMES: &'static [&'static str];
    const ALL: &'static [Self];

    /// The position of this value in `ALL` and `NAMES` (the enum's discriminant).
    fn index(self) -> usize;

    fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl Choice for $name {
            const NAMES: &'static [&'static str] = &[$($word),+];
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

choice!(
    /// The numbers the matrix products run in.
    Precision {
        /// bf16 on GPUs, fp32 on CPUs.
        Auto = "auto",
        Fp32 = "fp32",
        /// bf16 matrix products over fp32 master weights; LayerNorm and losses in fp32.
        Bf16 = "bf16",
    }
);

choice!(
    /// Where a rank trains (`train.device`, fine-tuning's `device`).
    DeviceRequest {
        /// The rank's GPU when torch can use one, the CPU on hosts without an NVIDIA
        /// driver; a host whose driver torch cannot use is an error.
        Auto = "auto",
        Cuda = "cuda",
        Cpu = "cpu",
    }
);

choice!(
    /// The optimizer of `train.optimizer`.
    OptimizerKind {
        /// AdamW as BERT uses it (decoupled decay, none on LayerNorm and biases).
        Adamw = "adamw",
        /// LAMB: AdamW's update scaled per tensor by the trust ratio (large batches).
        Lamb = "lamb",
    }
);

choice!(
    /// The learning rate's decay after the warm-up (`train.decay`).
    Decay {
        Linear = "linear",
        /// Polynomial decay with `train.poly_power` (NVIDIA's PolyWarmUpScheduler).
        Poly = "poly",
    }
);

choice!(
    /// What a NaN or infinite loss does (`train.on_nan`).
    OnNan {
        /// The run stops, naming the last good checkpoint.
        Stop = "stop",
        /// The step is skipped (weights and moments untouched).
        Skip = "skip",
    }
);

choice!(
    /// How the ranks sum their gradients (`distributed.backend`).
    BackendRequest {
        /// NCCL when every rank has a GPU of its own, MPI otherwise.
        Auto = "auto",
        Nccl = "nccl",
        Mpi = "mpi",
    }
);

choice!(
    /// The dtype NCCL sums the gradients in (`distributed.reduce_dtype`).
    ReduceDtype {
        Fp32 = "fp32",
        /// Half the traffic.
        Bf16 = "bf16",
    }
);

impl Precision {
    /// The dtype of the matrix products on `device`.
    pub fn compute_kind(self, device: tch::Device) -> tch::Kind {
        match (self, device) {
            (Precision::Bf16, _) | (Precision::Auto, tch::Device::Cuda(_)) => tch::Kind::BFloat16,
            _ => tch::Kind::Float,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words a bad value is checked against are the words serde reads and writes.
    fn round_trips<
        C: Choice + Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    >() {
        assert_eq!(C::NAMES.len(), C::ALL.len());
        for (&word, &value) in C::NAMES.iter().zip(C::ALL) {
            let text = toml::to_string(&std::collections::BTreeMap::from([("v", value)])).unwrap();
            assert_eq!(text.trim(), format!("v = \"{word}\""));
            let back: std::collections::BTreeMap<String, C> = toml::from_str(&text).unwrap();
            assert_eq!(back["v"], value);
            assert_eq!(value.name(), word);
        }
    }

    #[test]
    fn names_are_the_serialised_words() {
        round_trips::<Precision>();
        round_trips::<DeviceRequest>();
        round_trips::<OptimizerKind>();
        round_trips::<Decay>();
        round_trips::<OnNan>();
        round_trips::<BackendRequest>();
        round_trips::<ReduceDtype>();
    }

    #[test]
    fn precision_picks_bf16_on_gpus_only_when_auto() {
        let (cpu, gpu) = (tch::Device::Cpu, tch::Device::Cuda(0));
        assert_eq!(Precision::Auto.compute_kind(cpu), tch::Kind::Float);
        assert_eq!(Precision::Auto.compute_kind(gpu), tch::Kind::BFloat16);
        assert_eq!(Precision::Bf16.compute_kind(cpu), tch::Kind::BFloat16);
        assert_eq!(Precision::Fp32.compute_kind(gpu), tch::Kind::Float);
    }
}

//! BERT and its pretraining heads in tch, with the parameter names of Hugging Face
//! `BertForPreTraining` (`bert.embeddings...`, `bert.encoder.layer.N...`,
//! `cls.predictions...`, `cls.seq_relationship...`), so that checkpoints move between the
//! two without renaming. Exact (erf) GELU, absolute positions, token types, attention
//! through `scaled_dot_product_attention` with a padding mask, and a decoder tied to the
//! word embeddings with a bias of its own.

use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

use crate::model::bert_config::BertConfig;
use crate::model::compute_weights::ComputeWeights;
use crate::model::flash_attention;
use crate::model::fused_elementwise::FusedKernels;
use crate::model::packing::Packing;

fn linear(p: nn::Path, in_dim: i64, out_dim: i64, std: f64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        bs_init: Some(Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, in_dim, out_dim, config)
}

fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    let config = nn::LayerNormConfig {
        eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![dim], config)
}

fn embedding(p: nn::Path, n: i64, dim: i64, std: f64) -> nn::Embedding {
    let config = nn::EmbeddingConfig {
        ws_init: Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        ..Default::default()
    };
    nn::embedding(p, n, dim, config)
}

/// The query, key and value of a fused product split by `unbind`.
fn three(parts: Vec<Tensor>) -> [Tensor; 3] {
    parts
        .try_into()
        .unwrap_or_else(|p: Vec<Tensor>| panic!("q, k and v: {} parts", p.len()))
}

fn activation(name: &str, x: &Tensor) -> Tensor {
    match name {
        "gelu_new" | "gelu_pytorch_tanh" => x.gelu("tanh"),
        "relu" => x.relu(),
        _ => x.gelu("none"),
    }
}

struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    norm: nn::LayerNorm,
}

struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attention_output: nn::Linear,
    attention_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    output_norm: nn::LayerNorm,
}

pub struct Bert {
    pub config: BertConfig,
    /// The dtype of the matrix products: `Float`, or `BFloat16` for mixed precision. The
    /// parameters stay fp32 (the master weights) and are cast as they are used, like
    /// autocast does; LayerNorm, softmax inside the losses, and the losses run in fp32.
    pub compute: Kind,
    /// The dtype hidden states flow in between the matrix products: `Float` (the residual
    /// stream and LayerNorm outputs in fp32, as autocast leaves them) or, with a bf16
    /// `compute`, `BFloat16` (as Megatron-LM trains in bf16: half the activation memory and
    /// traffic; LayerNorm still accumulates its statistics in fp32).
    pub activations: Kind,
    /// Bias + dropout + residual + LayerNorm and bias + GELU as fused kernels
    /// (`train.fused_elementwise`), loaded and checked on the run's GPU.
    pub fused: Option<FusedKernels>,
    /// The master weights cast once per optimizer step (`train.cast_weights_once`); while
    /// they are fresh, the products read them instead of casting each weight as it is used.
    pub compute_weights: Option<ComputeWeights>,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: nn::Linear,
    transform: nn::Linear,
    transform_norm: nn::LayerNorm,
    /// `cls.predictions.bias`: the decoder's own bias (its weight is the word embeddings).
    decoder_bias: Tensor,
    seq_relationship: nn::Linear,
}

/// The encoder's outputs.
pub struct Encoded {
    /// [batch, seq, hidden], or [tokens, hidden] for a packed batch
    pub sequence: Tensor,
    /// [batch, hidden]: tanh(dense([CLS]))
    pub pooled: Tensor,
    /// The embeddings' output and every layer's, when asked for.
    pub hidden_states: Vec<Tensor>,
}

/// One batch. `attention_mask` is 1 for real tokens and 0 for padding, or `None` when no
/// position is padding (the caller knows that on the host): SDPA then gets no mask, which
/// lets it take the flash-attention kernel, as Hugging Face does for unpadded batches.
pub struct Batch<'a> {
    pub input_ids: &'a Tensor,
    pub token_type_ids: &'a Tensor,
    pub attention_mask: Option<&'a Tensor>,
    /// The real tokens packed into rows: when given, the encoder runs on them alone (and
    /// ignores `attention_mask`), and its `sequence` output is [tokens, hidden].
    pub packing: Option<&'a Packing>,
}

/// How a layer's attention sees the batch.
enum Attend<'a> {
    /// [batch, seq, ...] with SDPA's boolean key mask, or none when nothing is padding.
    Padded(Option<&'a Tensor>),
    /// [tokens, ...]: the variable-length flash kernel where it runs, else masked SDPA on
    /// the padded layout.
    Packed { packing: &'a Packing, flash: bool },
}

/// The pretraining losses (means, or sums from `pretraining_sums`); `Tensor`s stay on the
/// device so no host sync is forced.
pub struct Losses {
    pub total: Tensor,
    pub mlm: Tensor,
    pub nsp: Tensor,
    /// Correct MLM predictions and NSP predictions, as counts (for accuracy).
    pub mlm_correct: Tensor,
    pub mlm_count: Tensor,
    pub nsp_correct: Tensor,
}

impl Bert {
    pub fn new(root: &nn::Path, config: &BertConfig) -> Bert {
        let c = config;
        let std = c.initializer_range;
        let bert = root / "bert";
        let e = &bert / "embeddings";
        let embeddings = Embeddings {
            word: embedding(&e / "word_embeddings", c.vocab_size, c.hidden_size, std),
            position: embedding(
                &e / "position_embeddings",
                c.max_position_embeddings,
                c.hidden_size,
                std,
            ),
            token_type: embedding(
                &e / "token_type_embeddings",
                c.type_vocab_size,
                c.hidden_size,
                std,
            ),
            norm: layer_norm(&e / "LayerNorm", c.hidden_size, c.layer_norm_eps),
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = &bert / "encoder" / "layer" / i;
                let attention = &l / "attention";
                let h = c.hidden_size;
                Layer {
                    query: linear(&attention / "self" / "query", h, h, std),
                    key: linear(&attention / "self" / "key", h, h, std),
                    value: linear(&attention / "self" / "value", h, h, std),
                    attention_output: linear(&attention / "output" / "dense", h, h, std),
                    attention_norm: layer_norm(
                        &attention / "output" / "LayerNorm",
                        h,
                        c.layer_norm_eps,
                    ),
                    intermediate: linear(
                        &l / "intermediate" / "dense",
                        h,
                        c.intermediate_size,
                        std,
                    ),
                    output: linear(&l / "output" / "dense", c.intermediate_size, h, std),
                    output_norm: layer_norm(&l / "output" / "LayerNorm", h, c.layer_norm_eps),
                }
            })
            .collect();
        let pooler = linear(
            &bert / "pooler" / "dense",
            c.hidden_size,
            c.hidden_size,
            std,
        );
        let predictions = root / "cls" / "predictions";
        Bert {
            config: config.clone(),
            compute: Kind::Float,
            activations: Kind::Float,
            fused: None,
            compute_weights: None,
            embeddings,
            layers,
            pooler,
            transform: linear(
                &predictions / "transform" / "dense",
                c.hidden_size,
                c.hidden_size,
                std,
            ),
            transform_norm: layer_norm(
                &predictions / "transform" / "LayerNorm",
                c.hidden_size,
                c.layer_norm_eps,
            ),
            decoder_bias: predictions.zeros("bias", &[c.vocab_size]),
            seq_relationship: linear(root / "cls" / "seq_relationship", c.hidden_size, 2, std),
        }
    }

    /// A master weight in `kind`: its copy cast at the start of the optimizer step where
    /// there is one (`compute_weights`), else cast here. Each weight is read this way at
    /// most once per forward pass, so that its gradient is summed in fp32.
    fn weight(&self, w: &Tensor, kind: Kind) -> Tensor {
        match self.compute_weights.as_ref().and_then(|c| c.get(w, kind)) {
            Some(copy) => copy,
            None => w.to_kind(kind),
        }
    }

    /// A linear layer in the compute dtype.
    fn lin(&self, l: &nn::Linear, x: &Tensor) -> Tensor {
        if self.compute == Kind::Float {
            return l.forward(x);
        }
        let c = self.compute;
        x.to_kind(c).linear(
            &self.weight(&l.ws, c),
            l.bs.as_ref().map(|b| self.weight(b, c)),
        )
    }

    /// Several linear layers over the same input as one product, outputs concatenated.
    fn lin_fused(&self, layers: &[&nn::Linear], x: &Tensor) -> Tensor {
        let c = self.compute;
        let weights: Vec<Tensor> = layers.iter().map(|l| self.weight(&l.ws, c)).collect();
        let biases: Option<Vec<Tensor>> = layers
            .iter()
            .map(|l| l.bs.as_ref().map(|b| self.weight(b, c)))
            .collect();
        x.to_kind(c).linear(
            &Tensor::cat(&weights, 0),
            biases.map(|b| Tensor::cat(&b, 0)),
        )
    }

    /// LayerNorm: fp32 output, or bf16 in and out when the activations are bf16.
    fn norm(&self, n: &nn::LayerNorm, x: &Tensor) -> Tensor {
        match (self.compute, self.activations) {
            (Kind::Float, _) => n.forward(x),
            (_, Kind::Float) => n.forward(&x.to_kind(Kind::Float)),
            (_, a) => {
                let cast = |t: &Option<Tensor>| t.as_ref().map(|t| self.weight(t, a));
                x.to_kind(a).layer_norm(
                    &n.normalized_shape,
                    cast(&n.ws),
                    cast(&n.bs),
                    self.config.layer_norm_eps,
                    true,
                )
            }
        }
    }

    pub fn word_embeddings(&self) -> &Tensor {
        &self.embeddings.word.ws
    }

    /// The encoder. `keep_hidden` also returns every layer's output.
    pub fn encode(&self, batch: &Batch<'_>, train: bool, keep_hidden: bool) -> Encoded {
        if let Some(packing) = batch.packing {
            return self.encode_packed(batch, packing, train, keep_hidden);
        }
        let c = &self.config;
        let (b, t) = batch.input_ids.size2().expect("input_ids is [batch, seq]");
        let positions = Tensor::arange(t, (Kind::Int64, batch.input_ids.device())).unsqueeze(0);
        let e = &self.embeddings;
        let mut x = e.word.forward(batch.input_ids)
            + e.position.forward(&positions)
            + e.token_type.forward(batch.token_type_ids);
        x = self.norm(&e.norm, &x).dropout(c.hidden_dropout_prob, train);
        // SDPA's boolean mask: true where a query may attend, broadcast over heads and queries.
        let mask = batch
            .attention_mask
            .map(|m| m.to_kind(Kind::Bool).view([b, 1, 1, t]));
        let mut hidden_states = Vec::new();
        if keep_hidden {
            hidden_states.push(x.shallow_clone());
        }
        for layer in &self.layers {
            x = self.layer(layer, &x, &Attend::Padded(mask.as_ref()), train);
            if keep_hidden {
                hidden_states.push(x.shallow_clone());
            }
        }
        let pooled = self.lin(&self.pooler, &x.select(1, 0)).tanh();
        Encoded {
            sequence: x,
            pooled,
            hidden_states,
        }
    }

    /// The encoder on a packed batch: embeddings, every layer and the pooler's [CLS] rows
    /// on the real tokens alone.
    fn encode_packed(
        &self,
        batch: &Batch<'_>,
        packing: &Packing,
        train: bool,
        keep_hidden: bool,
    ) -> Encoded {
        let c = &self.config;
        let gather = |t: &Tensor| t.view([-1]).index_select(0, &packing.token_rows);
        let e = &self.embeddings;
        let mut x = e.word.forward(&gather(batch.input_ids))
            + e.position.forward(&packing.position_ids)
            + e.token_type.forward(&gather(batch.token_type_ids));
        x = self.norm(&e.norm, &x).dropout(c.hidden_dropout_prob, train);
        let flash =
            flash_attention::available(packing.device(), self.compute, c.head_dim()).is_ok();
        let attend = Attend::Packed { packing, flash };
        let mut hidden_states = Vec::new();
        if keep_hidden {
            hidden_states.push(x.shallow_clone());
        }
        for layer in &self.layers {
            x = self.layer(layer, &x, &attend, train);
            if keep_hidden {
                hidden_states.push(x.shallow_clone());
            }
        }
        let pooled = self
            .lin(&self.pooler, &x.index_select(0, &packing.cls_rows))
            .tanh();
        Encoded {
            sequence: x,
            pooled,
            hidden_states,
        }
    }

    /// Self-attention from the fused QKV product [.., 3 x hidden] to the context [.., hidden].
    fn attention(&self, qkv: &Tensor, attend: &Attend<'_>, dropout: f64) -> Tensor {
        let c = &self.config;
        let (heads, dim, h) = (c.num_attention_heads, c.head_dim(), c.hidden_size);
        let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>| {
            Tensor::scaled_dot_product_attention(q, k, v, mask, dropout, false, None, false)
        };
        match attend {
            Attend::Padded(mask) => {
                let (b, t, _) = qkv.size3().expect("[batch, seq, 3 x hidden]");
                // One strided view split by `unbind`, whose backward is one `stack`: three
                // `select`s would each allocate and fill a zero tensor the size of the
                // whole product in backward, and autograd would add the three.
                let qkv = qkv.view([b, t, 3, heads, dim]).permute([2, 0, 3, 1, 4]);
                let [q, k, v] = three(qkv.unbind(0));
                sdpa(&q, &k, &v, *mask)
                    .transpose(1, 2)
                    .contiguous()
                    .view([b, t, h])
            }
            Attend::Packed { packing, flash } => {
                let tokens = qkv.size()[0];
                let [q, k, v] = three(qkv.view([tokens, 3, heads, dim]).unbind(1));
                if *flash {
                    // The kernel takes a last dimension of stride 1, which these views
                    // have; the copies stay until a GPU check shows the strided views
                    // give the same results there.
                    let (q, k, v) = (q.contiguous(), k.contiguous(), v.contiguous());
                    let cu = &packing.cu_seqlens;
                    // `available` ran the kernel on this device, dtype and head size: a
                    // failure now is a broken invariant, not a host fact.
                    return flash_attention::varlen(&q, &k, &v, cu, packing.max_len(), dropout)
                        .expect("variable-length flash attention, probed on this device")
                        .view([tokens, h]);
                }
                // [batch, heads, width, head_dim] with the padding masked, then back.
                let padded = |x: &Tensor| packing.pad(x).transpose(1, 2);
                let context = sdpa(
                    &padded(&q),
                    &padded(&k),
                    &padded(&v),
                    Some(&packing.key_mask()),
                );
                packing.unpad(&context.transpose(1, 2)).view([tokens, h])
            }
        }
    }

    fn layer(&self, l: &Layer, x: &Tensor, attend: &Attend<'_>, train: bool) -> Tensor {
        if let Some(kernels) = &self.fused {
            return self.layer_fused(kernels, l, x, attend, train);
        }
        let c = &self.config;
        // One fused QKV product instead of three (the weights stay separate tensors under
        // their Hugging Face names; autograd splits the gradient back).
        let qkv = self.lin_fused(&[&l.query, &l.key, &l.value], x);
        let dropout = if train {
            c.attention_probs_dropout_prob
        } else {
            0.0
        };
        let context = self.attention(&qkv, attend, dropout);
        let projected = self.lin(&l.attention_output, &context);
        let attended = self.norm(
            &l.attention_norm,
            &(projected.dropout(c.hidden_dropout_prob, train) + x),
        );
        let inner = activation(&c.hidden_act, &self.lin(&l.intermediate, &attended));
        let out = self
            .lin(&l.output, &inner)
            .dropout(c.hidden_dropout_prob, train);
        self.norm(&l.output_norm, &(out + attended))
    }

    /// `layer` with its element-wise work in the fused kernels: each product runs without
    /// its bias, which the kernel after it adds (with dropout, the residual and LayerNorm,
    /// or with GELU). The kernels were checked on this GPU when they were loaded, for
    /// these dtypes and this width, so a failure here is a CUDA fault, on which libtorch's
    /// own operations panic through tch alike.
    fn layer_fused(
        &self,
        k: &FusedKernels,
        l: &Layer,
        x: &Tensor,
        attend: &Attend<'_>,
        train: bool,
    ) -> Tensor {
        let c = &self.config;
        let (attention_p, hidden_p) = match train {
            true => (c.attention_probs_dropout_prob, c.hidden_dropout_prob),
            false => (0.0, 0.0),
        };
        let qkv = self.lin_fused(&[&l.query, &l.key, &l.value], x);
        let context = self.attention(&qkv, attend, attention_p);
        let a = self.activations;
        let norm = |product: &Tensor, linear: &nn::Linear, n: &nn::LayerNorm, residual: &Tensor| {
            let (gamma, beta) = (n.ws.as_ref(), n.bs.as_ref());
            let (Some(bias), Some(gamma), Some(beta)) = (linear.bs.as_ref(), gamma, beta) else {
                unreachable!("BERT's products and LayerNorms all have their biases");
            };
            k.layer_norm(
                &product.to_kind(a),
                bias,
                &residual.to_kind(a),
                gamma,
                beta,
                hidden_p,
                c.layer_norm_eps,
            )
            .unwrap_or_else(|e| panic!("{e:#}"))
        };
        let attended = norm(
            &self.product(&l.attention_output, &context),
            &l.attention_output,
            &l.attention_norm,
            x,
        );
        let intermediate_bias = l
            .intermediate
            .bs
            .as_ref()
            .expect("BERT's products have biases");
        let inner = k
            .bias_gelu(&self.product(&l.intermediate, &attended), intermediate_bias)
            .unwrap_or_else(|e| panic!("{e:#}"));
        norm(
            &self.product(&l.output, &inner),
            &l.output,
            &l.output_norm,
            &attended,
        )
    }

    /// A linear layer's product without its bias, in the compute dtype.
    fn product(&self, l: &nn::Linear, x: &Tensor) -> Tensor {
        let c = self.compute;
        x.to_kind(c).linear(&self.weight(&l.ws, c), None::<Tensor>)
    }

    /// The MLM head on hidden states [.., hidden]: vocabulary logits [.., vocab].
    pub fn mlm_logits(&self, hidden: &Tensor) -> Tensor {
        let y = activation(&self.config.hidden_act, &self.lin(&self.transform, hidden));
        let y = self.norm(&self.transform_norm, &y);
        let c = self.compute;
        let logits = y
            .to_kind(c)
            .matmul(&self.weight(self.word_embeddings(), c).tr());
        logits.to_kind(Kind::Float) + &self.decoder_bias
    }

    /// NSP logits, in fp32.
    pub fn nsp_logits(&self, pooled: &Tensor) -> Tensor {
        self.lin(&self.seq_relationship, pooled)
            .to_kind(Kind::Float)
    }

    /// MLM + NSP loss as `BertForPreTraining` computes it (mean cross-entropy over the
    /// labelled positions, plus mean NSP cross-entropy), with the MLM head run only at the
    /// labelled positions: `mlm_labels` is -100 elsewhere.
    pub fn pretraining_losses(
        &self,
        batch: &Batch<'_>,
        mlm_labels: &Tensor,
        nsp_labels: &Tensor,
        train: bool,
    ) -> Losses {
        let sums = self.pretraining_sums(batch, mlm_labels, nsp_labels, train);
        let mlm = &sums.mlm / sums.mlm_count.to_kind(Kind::Float);
        let nsp = &sums.nsp / nsp_labels.size()[0] as f64;
        Losses {
            total: &mlm + &nsp,
            mlm,
            nsp,
            ..sums
        }
    }

    /// The same losses as sums over the labelled positions and the sequences, so that
    /// micro-batches and ranks can be normalised by the counts of the whole global batch:
    /// then accumulation and data parallelism give the gradient of one large batch.
    pub fn pretraining_sums(
        &self,
        batch: &Batch<'_>,
        mlm_labels: &Tensor,
        nsp_labels: &Tensor,
        train: bool,
    ) -> Losses {
        // `nonzero` waits for the device: the trainer passes the positions from the host
        // instead (`pretraining_sums_at`).
        let flat_labels = mlm_labels.view([-1]);
        let positions = flat_labels.ne(-100).nonzero().squeeze_dim(1);
        let targets = flat_labels.index_select(0, &positions);
        self.pretraining_sums_at(batch, &positions, &targets, nsp_labels, train)
    }

    /// `pretraining_sums` with the labelled positions given: `positions` index the
    /// flattened [batch x seq] tokens, `targets` are their original ids.
    pub fn pretraining_sums_at(
        &self,
        batch: &Batch<'_>,
        positions: &Tensor,
        targets: &Tensor,
        nsp_labels: &Tensor,
        train: bool,
    ) -> Losses {
        let encoded = self.encode(batch, train, false);
        let h = self.config.hidden_size;
        let hidden = encoded.sequence.view([-1, h]).index_select(0, positions);
        let logits = self.mlm_logits(&hidden);
        let sum = tch::Reduction::Sum;
        let mlm = logits.cross_entropy_loss::<Tensor>(targets, None, sum, -100, 0.0);
        let nsp_logits = self.nsp_logits(&encoded.pooled);
        let nsp = nsp_logits.cross_entropy_loss::<Tensor>(nsp_labels, None, sum, -100, 0.0);
        Losses {
            total: &mlm + &nsp,
            mlm_correct: logits.argmax(-1, false).eq_tensor(targets).sum(Kind::Int64),
            mlm_count: Tensor::from(targets.size()[0]),
            nsp_correct: nsp_logits
                .argmax(-1, false)
                .eq_tensor(nsp_labels)
                .sum(Kind::Int64),
            mlm,
            nsp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (nn::VarStore, Bert) {
        tch::manual_seed(7);
        let config = BertConfig::tiny_for_tests();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let bert = Bert::new(&vs.root(), &config);
        (vs, bert)
    }

    #[test]
    fn an_unpadded_batch_without_a_mask_equals_the_masked_path() {
        let (_vs, bert) = tiny();
        let ids = Tensor::randint(50, [3, 9], (Kind::Int64, tch::Device::Cpu));
        let types = ids.zeros_like();
        let ones = ids.ones_like();
        let encode = |mask: Option<&Tensor>| {
            let batch = Batch {
                input_ids: &ids,
                token_type_ids: &types,
                attention_mask: mask,
                packing: None,
            };
            tch::no_grad(|| bert.encode(&batch, false, false).sequence)
        };
        let (masked, unmasked) = (encode(Some(&ones)), encode(None));
        let diff = (masked - unmasked).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }

    /// The fused layer, with the kernels' unfused reference behind them, equals the layer:
    /// each product's bias goes where the unfused layer adds it, and each LayerNorm gets
    /// its own residual. Outputs and every parameter's gradient, fp32 and bf16 activations.
    #[test]
    fn the_fused_layer_adds_each_bias_where_the_unfused_layer_does() {
        let (vs, mut bert) = tiny();
        let ids = Tensor::randint(50, [3, 9], (Kind::Int64, tch::Device::Cpu));
        let types = ids.zeros_like();
        let batch = Batch {
            input_ids: &ids,
            token_type_ids: &types,
            attention_mask: None,
            packing: None,
        };
        let vars = vs.trainable_variables();
        let run = |bert: &Bert| {
            let out = bert.encode(&batch, false, false);
            let loss = (out.sequence.to_kind(Kind::Float) * 0.01)
                .sin()
                .sum(Kind::Float)
                + out.pooled.to_kind(Kind::Float).sum(Kind::Float);
            let grads = Tensor::run_backward(&[&loss], &vars, false, false);
            (out.sequence.to_kind(Kind::Float), grads)
        };
        for (compute, tolerance) in [(Kind::Float, 1e-5), (Kind::BFloat16, 2e-2)] {
            bert.compute = compute;
            bert.activations = compute;
            bert.fused = None;
            let (want, want_grads) = run(&bert);
            bert.fused = Some(FusedKernels::host_reference());
            let (got, got_grads) = run(&bert);
            let scale = want.abs().max().double_value(&[]).max(1.0);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < tolerance * scale, "{compute:?} output: {diff}");
            for (g, w) in got_grads.iter().zip(&want_grads) {
                // The heads are not in the encoder's graph.
                assert_eq!(g.defined(), w.defined());
                if !w.defined() {
                    continue;
                }
                let scale = w.abs().max().double_value(&[]).max(1e-3);
                let diff = (g - w).abs().max().double_value(&[]);
                assert!(
                    diff < tolerance * scale * 10.0,
                    "{compute:?} gradient: {diff} of {scale}"
                );
            }
        }
    }

    #[test]
    fn the_mask_still_hides_padding() {
        let (_vs, bert) = tiny();
        let ids = Tensor::randint(50, [2, 6], (Kind::Int64, tch::Device::Cpu));
        let types = ids.zeros_like();
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]).view([2, 6]);
        let encode = |ids: &Tensor| {
            let batch = Batch {
                input_ids: ids,
                token_type_ids: &types,
                attention_mask: Some(&mask),
                packing: None,
            };
            tch::no_grad(|| bert.encode(&batch, false, false).sequence)
        };
        // Other ids in the padding of sequence 0 change nothing of its real positions.
        let other = ids.copy();
        let _ = other.get(0).narrow(0, 4, 2).fill_(3);
        let (a, b) = (encode(&ids), encode(&other));
        let diff = (a.get(0).narrow(0, 0, 4) - b.get(0).narrow(0, 0, 4))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Packed (dropout off), the encoder gives the padded batch's outputs at every real
    /// position, the same [CLS] pooling, losses and gradients.
    #[test]
    fn a_packed_batch_gives_the_padded_outputs_losses_and_gradients() {
        let (vs, bert) = tiny();
        let lengths = [9usize, 4, 7];
        let width = 9;
        let ids = Tensor::randint(50, [3, 9], (Kind::Int64, tch::Device::Cpu));
        let types = Tensor::randint(2, [3, 9], (Kind::Int64, tch::Device::Cpu));
        let mask: Vec<i64> = lengths
            .iter()
            .flat_map(|&l| (0..width).map(move |j| i64::from(j < l)))
            .collect();
        let mask = Tensor::from_slice(&mask).view([3, 9]);
        let packing = Packing::from_lengths(&lengths, width);
        let batch = |packed: bool| Batch {
            input_ids: &ids,
            token_type_ids: &types,
            attention_mask: Some(&mask),
            packing: packed.then_some(&packing),
        };
        let (padded, packed) = tch::no_grad(|| {
            (
                bert.encode(&batch(false), false, false),
                bert.encode(&batch(true), false, false),
            )
        });
        assert_eq!(packed.sequence.size(), [20, 16]);
        let d = max_diff(&packing.unpad(&padded.sequence), &packed.sequence);
        assert!(d < 1e-5, "sequence {d}");
        let d = max_diff(&padded.pooled, &packed.pooled);
        assert!(d < 1e-5, "pooled {d}");

        // Masked positions 2 and 3 of sequence 0, 3 of 1, 6 of 2: flat indices
        // into [3 x 9] for the padded batch, packed rows for the packed one.
        let flat = Tensor::from_slice(&[2i64, 3, 12, 24]);
        let rows = Tensor::from_slice(&[2i64, 3, 12, 19]);
        let targets = Tensor::from_slice(&[5i64, 6, 7, 8]);
        let nsp = Tensor::from_slice(&[0i64, 1, 1]);
        let grads = |packed: bool| {
            for v in vs.trainable_variables() {
                if v.grad().defined() {
                    let _ = v.grad().zero_();
                }
            }
            let positions = if packed { &rows } else { &flat };
            let s = bert.pretraining_sums_at(&batch(packed), positions, &targets, &nsp, false);
            s.total.backward();
            let grads: Vec<Tensor> = vs
                .trainable_variables()
                .iter()
                .map(|v| v.grad().copy())
                .collect();
            (s.total.double_value(&[]), grads)
        };
        let (loss_padded, grads_padded) = grads(false);
        let (loss_packed, grads_packed) = grads(true);
        assert!(
            (loss_padded - loss_packed).abs() < 1e-5,
            "{loss_padded} {loss_packed}"
        );
        for (a, b) in grads_padded.iter().zip(&grads_packed) {
            let d = max_diff(a, b);
            assert!(d < 1e-5, "gradient {d}");
        }
    }
}

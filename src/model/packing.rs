//! A batch's real tokens packed into rows, with no padding ("unpadding", as NVIDIA's and
//! MosaicBERT's BERT implementations do): every position-wise product (QKV, attention
//! output, feed-forward, LayerNorm) runs on [tokens, hidden] instead of [batch x width,
//! hidden], and attention sees each sequence at its own length through the
//! variable-length flash kernel (`flash_attention`). The data loader builds it on the host
//! from the sequence lengths, per micro-batch: four small index tensors (at seq 512 x
//! batch 32, 16,384 rows at most: 260 KB).

use tch::{Device, Kind, Tensor};

pub struct Packing {
    /// The real tokens' indices into the flattened [batch x width] batch, in order:
    /// i64 [tokens].
    pub token_rows: Tensor,
    /// Each real token's position in its sequence: i64 [tokens].
    pub position_ids: Tensor,
    /// 0, then the end of each sequence in the packed rows: i32 [batch + 1] (flash
    /// attention's cumulative sequence lengths).
    pub cu_seqlens: Tensor,
    /// The packed row of each sequence's first token ([CLS]): i64 [batch].
    pub cls_rows: Tensor,
    pub batch: i64,
    /// The padded batch's width (its longest sequence).
    pub width: i64,
}

impl Packing {
    /// The packing of sequences of these lengths, padded to `width`.
    pub fn from_lengths(lengths: &[usize], width: usize) -> Packing {
        let tokens: usize = lengths.iter().sum();
        let (mut rows, mut positions) = (Vec::with_capacity(tokens), Vec::with_capacity(tokens));
        let (mut cu, mut cls) = (vec![0i32], Vec::with_capacity(lengths.len()));
        for (i, &len) in lengths.iter().enumerate() {
            cls.push(rows.len() as i64);
            rows.extend((0..len).map(|j| (i * width + j) as i64));
            positions.extend(0..len as i64);
            cu.push(rows.len() as i32);
        }
        Packing {
            token_rows: Tensor::from_slice(&rows),
            position_ids: Tensor::from_slice(&positions),
            cu_seqlens: Tensor::from_slice(&cu),
            cls_rows: Tensor::from_slice(&cls),
            batch: lengths.len() as i64,
            width: width as i64,
        }
    }

    /// The same packing with every tensor passed through `f` (to pinned memory, to a device).
    pub fn try_map(
        &self,
        f: impl Fn(&Tensor) -> anyhow::Result<Tensor>,
    ) -> anyhow::Result<Packing> {
        Ok(Packing {
            token_rows: f(&self.token_rows)?,
            position_ids: f(&self.position_ids)?,
            cu_seqlens: f(&self.cu_seqlens)?,
            cls_rows: f(&self.cls_rows)?,
            batch: self.batch,
            width: self.width,
        })
    }

    /// The longest sequence.
    pub fn max_len(&self) -> i64 {
        self.width
    }

    pub fn device(&self) -> Device {
        self.token_rows.device()
    }

    /// `x` [tokens, ...] scattered back to [batch, width, ...] with zeros in the padding.
    pub fn pad(&self, x: &Tensor) -> Tensor {
        let mut shape = x.size();
        shape[0] = self.batch * self.width;
        let padded =
            Tensor::zeros(&shape, (x.kind(), x.device())).index_copy(0, &self.token_rows, x);
        shape[0] = self.width;
        shape.insert(0, self.batch);
        padded.view(shape.as_slice())
    }

    /// The attention mask of the padded layout, as SDPA takes it: bool [batch, 1, 1, width].
    pub fn key_mask(&self) -> Tensor {
        Tensor::zeros([self.batch * self.width], (Kind::Bool, self.device()))
            .index_fill(0, &self.token_rows, 1)
            .view([self.batch, 1, 1, self.width])
    }

    /// `x` [batch, width, ...] gathered to the packed rows [tokens, ...].
    pub fn unpad(&self, x: &Tensor) -> Tensor {
        let mut shape = x.size();
        let rest = shape.split_off(2);
        let flat: Vec<i64> = std::iter::once(self.batch * self.width)
            .chain(rest)
            .collect();
        x.reshape(flat.as_slice()).index_select(0, &self.token_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_lengths_and_first_tokens_follow_the_sequences() {
        let p = Packing::from_lengths(&[3, 1, 2], 3);
        assert_eq!(
            Vec::<i64>::try_from(&p.token_rows).unwrap(),
            [0, 1, 2, 3, 6, 7]
        );
        assert_eq!(
            Vec::<i64>::try_from(&p.position_ids).unwrap(),
            [0, 1, 2, 0, 0, 1]
        );
        assert_eq!(Vec::<i32>::try_from(&p.cu_seqlens).unwrap(), [0, 3, 4, 6]);
        assert_eq!(Vec::<i64>::try_from(&p.cls_rows).unwrap(), [0, 3, 4]);
        assert_eq!(p.max_len(), 3);
    }

    #[test]
    fn pad_and_unpad_are_inverse_on_the_real_tokens() {
        let p = Packing::from_lengths(&[2, 3], 3);
        let x = Tensor::arange(10, (Kind::Float, Device::Cpu)).view([5, 2]) + 1.0;
        let padded = p.pad(&x);
        assert_eq!(padded.size(), [2, 3, 2]);
        // Sequence 0's third position is padding: zeros.
        assert_eq!(
            Vec::<f32>::try_from(padded.get(0).get(2)).unwrap(),
            [0.0, 0.0]
        );
        assert!(p.unpad(&padded).equal(&x));
        let mask = Vec::<bool>::try_from(p.key_mask().view([-1])).unwrap();
        assert_eq!(mask, [true, true, false, true, true, true]);
    }
}

//! Text-model layers: layer norm against a hand computation and a
//! gradcheck, multi-head attention against the unfused composition with the
//! same weights, padding invariance of the encoder layer (pre- and
//! post-norm), sinusoidal positions, and a small encoder that learns.

mod common;
use common::*;
use shadergrad::nn::{
    LayerNorm, Linear, Module, MultiHeadAttention, PositionEmbedding, TransformerEncoderLayer,
};
use shadergrad::{Adam, AttentionOpts, Optimizer, Result, Tensor};

fn layer_norm() -> Result<()> {
    let ln = LayerNorm::new(4, 1e-5)?;
    let x = t(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 0.0, 1.0], &[2, 4]);
    // row 1: mean 2.5, var 1.25; row 2: mean 0, var 0.5
    let a = 1.0 / (1.25f32 + 1e-5).sqrt();
    let b = 1.0 / (0.5f32 + 1e-5).sqrt();
    assert_close(
        &ln.forward(&x)?.to_vec()?,
        &[-1.5 * a, -0.5 * a, 0.5 * a, 1.5 * a, -b, 0.0, 0.0, b],
        1e-5,
        1e-5,
    );
    assert!(ln.forward(&rt(&[2, 3], 1)).is_err());
    let w = rt(&[5], 2);
    let bias = rt(&[5], 3);
    gradcheck(vec![rt(&[3, 5], 4), w, bias], |v| {
        let centred = v[0].sub(&v[0].mean(&[-1], true)?)?;
        let var = centred.square().mean(&[-1], true)?;
        centred
            .div(&var.add_scalar(1e-5).sqrt())?
            .mul(&v[1])?
            .add(&v[2])
    });
    Ok(())
}

fn multi_head_attention_matches_composition() -> Result<()> {
    let (b, l, dim, heads) = (2, 6, 12, 3);
    let mha = MultiHeadAttention::new(dim, heads)?;
    let x = rt(&[b, l, dim], 1);
    let mask = t(&[1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0.], &[b, l]);
    let got = mha.attend(&x, Some(&mask))?;
    let proj = |lin: &Linear| -> Result<Tensor> {
        lin.forward(&x)?
            .reshape(&[b, l, heads, dim / heads])?
            .permute(&[0, 2, 1, 3])
    };
    let o = Tensor::attention_unfused(
        &proj(&mha.query)?,
        &proj(&mha.key)?,
        &proj(&mha.value)?,
        &AttentionOpts::key_mask(&mask),
    )?;
    let want = mha
        .output
        .forward(&o.permute(&[0, 2, 1, 3])?.reshape(&[b, l, dim])?)?;
    assert_close(&got.to_vec()?, &want.to_vec()?, 1e-5, 1e-4);
    assert_eq!(mha.parameters().len(), 8);
    assert!(MultiHeadAttention::new(10, 3).is_err());
    Ok(())
}

/// Changing padded tokens changes nothing at the real positions.
fn encoder_ignores_padding() -> Result<()> {
    for norm_first in [false, true] {
        let mut layer = TransformerEncoderLayer::new(8, 2, 16, 0.1, norm_first)?;
        layer.set_training(false);
        let mask = t(&[1., 1., 1., 0., 0.], &[1, 5]);
        let x = rt(&[1, 5, 8], 1);
        let noise = rt(&[1, 5, 8], 2).mul(&t(&[0., 0., 0., 1., 1.], &[1, 5, 1]))?;
        let a = layer.forward_masked(&x, Some(&mask))?.to_vec()?;
        let c = layer
            .forward_masked(&x.add(&noise)?, Some(&mask))?
            .to_vec()?;
        assert_close(&a[..24], &c[..24], 1e-5, 1e-5);
        assert!(a[24..].iter().zip(&c[24..]).any(|(p, q)| p != q));
    }
    Ok(())
}

fn sinusoidal_positions() -> Result<()> {
    let pe = PositionEmbedding::sinusoidal(50, 6)?;
    let p = pe.positions(3)?.to_vec()?;
    let want: Vec<f32> = (0..3)
        .flat_map(|pos| {
            (0..6).map(move |i| {
                let a = pos as f64 / 10000f64.powf((i / 2 * 2) as f64 / 6.0);
                (if i % 2 == 0 { a.sin() } else { a.cos() }) as f32
            })
        })
        .collect();
    assert_close(&p, &want, 1e-6, 1e-6);
    assert!(pe.positions(51).is_err());
    assert!(pe.parameters().is_empty());
    Ok(())
}

/// Training smoke test: embeddings, one pre-norm encoder layer, mean
/// pooling over real tokens and a linear head learn whether token 1 occurs
/// in a padded sequence (here the loss reaches about 1e-5 by step 100).
fn small_encoder_learns() -> Result<()> {
    shadergrad::manual_seed(7);
    let (vocab, dim, b, l) = (6, 16, 16, 6);
    let emb = shadergrad::nn::Embedding::new(vocab, dim, 0.5)?;
    let layer = TransformerEncoderLayer::new(dim, 2, 32, 0.0, true)?;
    let head = Linear::new(dim, 2, shadergrad::nn::Init::GlorotUniform)?;
    let mut params: Vec<_> = emb.parameters();
    params.extend(layer.parameters());
    params.extend(head.parameters());
    let mut opt = Adam::new(params.into_iter().map(|(_, p)| p).collect(), 1e-2);
    let mut rng = 12345u64;
    let mut next = |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let mut late = Vec::new();
    for step in 0..120 {
        let (mut ids, mut mask, mut labels) = (vec![0i32; b * l], vec![0f32; b * l], vec![0i32; b]);
        for s in 0..b {
            let len = 2 + next(l as u64 - 1) as usize;
            for j in 0..len {
                ids[s * l + j] = 2 + next(4) as i32;
                mask[s * l + j] = 1.0;
            }
            if next(2) == 1 {
                ids[s * l + next(len as u64) as usize] = 1;
                labels[s] = 1;
            }
        }
        let ids = Tensor::from_slice_i32(&ids, &[b, l])?;
        let mask = t(&mask, &[b, l]);
        let h = layer.forward_masked(&emb.forward(&ids)?, Some(&mask))?;
        let m3 = mask.reshape(&[b, l, 1])?;
        let pooled = h.mul(&m3)?.sum(&[1], false)?.div(&m3.sum(&[1], false)?)?;
        let logits = head.forward(&pooled)?;
        let loss = logits.cross_entropy(&Tensor::from_slice_i32(&labels, &[b])?, 0.0)?;
        let value = opt.step(&loss)?;
        if step >= 100 {
            late.push(value);
        }
    }
    // Chance is ln 2 = 0.69.
    let mean = late.iter().sum::<f32>() / late.len() as f32;
    assert!(
        mean < 0.05,
        "mean loss of the last 20 steps {mean}: {late:?}"
    );
    Ok(())
}

backend_tests!(
    layer_norm,
    multi_head_attention_matches_composition,
    encoder_ignores_padding,
    sinusoidal_positions,
    small_encoder_learns,
);

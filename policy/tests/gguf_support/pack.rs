//! Packers that build quantised blocks from *logical* values (scales, mins, small integers),
//! plus the value each element must dequantise to. They are the inverse of the unpacking in
//! the loader, written independently from ggml's struct layouts.

use half::f16;

fn h(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// f16-exact scales so expected values need no rounding assumptions.
pub const D: f32 = 0.125;
pub const M: f32 = -0.5;

/// Deterministic small integers in `0..range` for element `i` of block `seed`.
pub fn q(i: usize, seed: usize, range: u32) -> u32 {
    ((i as u32).wrapping_mul(7) + (seed as u32).wrapping_mul(13) + (i as u32 >> 3)) % range
}

pub fn q4_0(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<u32> = (0..32).map(|i| q(i, seed, 16)).collect();
    let mut b = h(D).to_vec();
    b.extend((0..16).map(|j| (qs[j] | qs[j + 16] << 4) as u8));
    (b, qs.iter().map(|&v| (v as f32 - 8.0) * D).collect())
}

pub fn q4_1(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<u32> = (0..32).map(|i| q(i, seed, 16)).collect();
    let mut b = h(D).to_vec();
    b.extend(h(M));
    b.extend((0..16).map(|j| (qs[j] | qs[j + 16] << 4) as u8));
    (b, qs.iter().map(|&v| v as f32 * D + M).collect())
}

fn five_bit(qs: &[u32]) -> (u32, Vec<u8>) {
    let high = (0..32).fold(0u32, |acc, i| acc | ((qs[i] >> 4) << i));
    let low = (0..16)
        .map(|j| ((qs[j] & 15) | (qs[j + 16] & 15) << 4) as u8)
        .collect();
    (high, low)
}

pub fn q5_0(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<u32> = (0..32).map(|i| q(i, seed, 32)).collect();
    let (high, low) = five_bit(&qs);
    let mut b = h(D).to_vec();
    b.extend(high.to_le_bytes());
    b.extend(low);
    (b, qs.iter().map(|&v| (v as f32 - 16.0) * D).collect())
}

pub fn q5_1(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<u32> = (0..32).map(|i| q(i, seed, 32)).collect();
    let (high, low) = five_bit(&qs);
    let mut b = h(D).to_vec();
    b.extend(h(M));
    b.extend(high.to_le_bytes());
    b.extend(low);
    (b, qs.iter().map(|&v| v as f32 * D + M).collect())
}

pub fn q8_0(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<i32> = (0..32).map(|i| q(i * 9, seed, 256) as i32 - 128).collect();
    let mut b = h(D).to_vec();
    b.extend(qs.iter().map(|&v| v as i8 as u8));
    (b, qs.iter().map(|&v| v as f32 * D).collect())
}

pub fn q8_k(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<i32> = (0..256).map(|i| q(i * 5, seed, 256) as i32 - 128).collect();
    let mut b = 0.25f32.to_le_bytes().to_vec();
    b.extend(qs.iter().map(|&v| v as i8 as u8));
    for s in 0..16 {
        let sum: i32 = qs[s * 16..s * 16 + 16].iter().sum();
        b.extend((sum as i16).to_le_bytes());
    }
    (b, qs.iter().map(|&v| v as f32 * 0.25).collect())
}

/// 8 six-bit scales and mins packed the K-quant way (12 bytes).
fn pack_scale_min(sc: &[u32; 8], mn: &[u32; 8]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for j in 0..4 {
        out[j] = ((sc[j] & 63) | (sc[j + 4] >> 4) << 6) as u8;
        out[j + 4] = ((mn[j] & 63) | (mn[j + 4] >> 4) << 6) as u8;
        out[j + 8] = ((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4) as u8;
    }
    out
}

fn k_scales(seed: usize) -> ([u32; 8], [u32; 8]) {
    (
        std::array::from_fn(|i| q(i * 11 + 1, seed, 64)),
        std::array::from_fn(|i| q(i * 5 + 3, seed, 64)),
    )
}

pub fn q4_k(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let (d, dmin) = (D, 0.0625f32);
    let (sc, mn) = k_scales(seed);
    let qs: Vec<u32> = (0..256).map(|i| q(i, seed, 16)).collect();
    let mut b = h(d).to_vec();
    b.extend(h(dmin));
    b.extend(pack_scale_min(&sc, &mn));
    for c in 0..4 {
        b.extend((0..32).map(|l| (qs[c * 64 + l] | qs[c * 64 + 32 + l] << 4) as u8));
    }
    let expect = (0..256)
        .map(|e| (d * sc[e / 32] as f32) * qs[e] as f32 - dmin * mn[e / 32] as f32)
        .collect();
    (b, expect)
}

pub fn q5_k(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let (d, dmin) = (D, 0.0625f32);
    let (sc, mn) = k_scales(seed);
    let qs: Vec<u32> = (0..256).map(|i| q(i, seed, 32)).collect();
    let mut b = h(d).to_vec();
    b.extend(h(dmin));
    b.extend(pack_scale_min(&sc, &mn));
    let mut qh = [0u8; 32];
    for (e, &v) in qs.iter().enumerate() {
        qh[e % 32] |= ((v >> 4) as u8) << (e / 32);
    }
    b.extend(qh);
    for c in 0..4 {
        b.extend((0..32).map(|l| ((qs[c * 64 + l] & 15) | (qs[c * 64 + 32 + l] & 15) << 4) as u8));
    }
    let expect = (0..256)
        .map(|e| (d * sc[e / 32] as f32) * qs[e] as f32 - dmin * mn[e / 32] as f32)
        .collect();
    (b, expect)
}

pub fn q6_k(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<u32> = (0..256).map(|i| q(i, seed, 64)).collect();
    let sc: Vec<i32> = (0..16).map(|s| q(s * 3, seed, 64) as i32 - 32).collect();
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for n in 0..2 {
        let v = |k: usize| qs[n * 128 + k];
        for l in 0..32 {
            ql[n * 64 + l] = ((v(l) & 15) | (v(l + 64) & 15) << 4) as u8;
            ql[n * 64 + l + 32] = ((v(l + 32) & 15) | (v(l + 96) & 15) << 4) as u8;
            qh[n * 32 + l] = ((v(l) >> 4)
                | (v(l + 32) >> 4) << 2
                | (v(l + 64) >> 4) << 4
                | (v(l + 96) >> 4) << 6) as u8;
        }
    }
    let mut b = ql.to_vec();
    b.extend(qh);
    b.extend(sc.iter().map(|&s| s as i8 as u8));
    b.extend(h(D));
    let expect = (0..256)
        .map(|e| (D * sc[e / 16] as f32) * (qs[e] as f32 - 32.0))
        .collect();
    (b, expect)
}

pub fn q2_k(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let (d, dmin) = (D, 0.0625f32);
    let qs: Vec<u32> = (0..256).map(|i| q(i, seed, 4)).collect();
    let sc: Vec<u32> = (0..16).map(|s| q(s * 3, seed, 16)).collect();
    let mn: Vec<u32> = (0..16).map(|s| q(s * 7 + 1, seed, 16)).collect();
    let mut b: Vec<u8> = (0..16).map(|s| (sc[s] | mn[s] << 4) as u8).collect();
    let mut packed = [0u8; 64];
    for (e, &v) in qs.iter().enumerate() {
        packed[(e / 128) * 32 + e % 32] |= (v as u8) << (2 * ((e % 128) / 32));
    }
    b.extend(packed);
    b.extend(h(d));
    b.extend(h(dmin));
    let expect = (0..256)
        .map(|e| (d * sc[e / 16] as f32) * qs[e] as f32 - dmin * mn[e / 16] as f32)
        .collect();
    (b, expect)
}

pub fn q3_k(seed: usize) -> (Vec<u8>, Vec<f32>) {
    let qs: Vec<u32> = (0..256).map(|i| q(i, seed, 8)).collect();
    let sc: Vec<u32> = (0..16).map(|s| q(s * 5, seed, 64)).collect();
    let mut hmask = [0u8; 32];
    let mut low = [0u8; 64];
    for (e, &v) in qs.iter().enumerate() {
        low[(e / 128) * 32 + e % 32] |= ((v & 3) as u8) << (2 * ((e % 128) / 32));
        hmask[e % 32] |= ((v >> 2) as u8) << (e / 32);
    }
    let mut scales = [0u8; 12];
    for (k, &s) in sc.iter().enumerate() {
        scales[k % 8] |= ((s & 15) as u8) << (4 * (k / 8));
        scales[8 + k % 4] |= ((s >> 4) as u8) << (2 * (k / 4));
    }
    let mut b = hmask.to_vec();
    b.extend(low);
    b.extend(scales);
    b.extend(h(D));
    let expect = (0..256)
        .map(|e| (D * (sc[e / 16] as f32 - 32.0)) * (qs[e] as f32 - 4.0))
        .collect();
    (b, expect)
}

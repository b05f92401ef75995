//! Cosine learning-rate schedule with warmup and global grad-norm clipping (DESIGN.md §4).

use crate::common::*;
use rto_algo::{clip_grad_norm, cosine_with_warmup, CosineSchedule};
use tch::Tensor;

#[test]
fn cosine_schedule_values() {
    // total 100, warmup ceil(100·0.1) = 10 steps, peak 2.0, floor 0.1·2.0 = 0.2
    let s = CosineSchedule { total_steps: 100, warmup_ratio: 0.1, peak_lr: 2.0, min_lr_ratio: 0.1 };
    s.validate().unwrap();
    assert_eq!(s.warmup_steps(), 10);
    assert_close(s.lr_at(0), 0.0, 1e-12, "first step");
    assert_close(s.lr_at(5), 1.0, 1e-12, "mid warmup: 2.0·5/10");
    assert_close(s.lr_at(10), 2.0, 1e-12, "peak: progress 0, cos 0 = 1");
    // step 40: progress 30/90 = 1/3; 0.5·(1 + cos(π/3)) = 0.75; 2.0·(0.1 + 0.9·0.75) = 1.55
    assert_close(s.lr_at(40), 1.55, 1e-12, "one third down");
    // step 55: progress 1/2; 0.5·(1 + 0) = 0.5; 2.0·(0.1 + 0.45) = 1.1
    assert_close(s.lr_at(55), 1.1, 1e-12, "half way");
    assert_close(s.lr_at(100), 0.2, 1e-12, "end: the floor");
    assert_close(s.lr_at(150), 0.2, 1e-12, "past the end: stays at the floor");
    // DESIGN.md §4: 3 % warmup; ceil(100·0.03) = 3
    assert_close(cosine_with_warmup(1, 100, 0.03, 5e-7, 0.1).unwrap(), 5e-7 / 3.0, 1e-20, "3% warmup");
    assert_close(cosine_with_warmup(3, 100, 0.03, 5e-7, 0.1).unwrap(), 5e-7, 1e-20, "3% peak");
    // no warmup: step 0 is the peak
    assert_close(cosine_with_warmup(0, 10, 0.0, 1.0, 0.0).unwrap(), 1.0, 1e-12, "no warmup");
}

#[test]
fn schedule_rejects_bad_settings() {
    assert!(err_text(cosine_with_warmup(0, 0, 0.03, 1.0, 0.1).unwrap_err()).contains("total_steps"));
    assert!(err_text(cosine_with_warmup(0, 10, 1.5, 1.0, 0.1).unwrap_err()).contains("warmup_ratio"));
    assert!(err_text(cosine_with_warmup(0, 10, 0.1, -1.0, 0.1).unwrap_err()).contains("peak_lr"));
    assert!(err_text(cosine_with_warmup(0, 10, 0.1, 1.0, 2.0).unwrap_err()).contains("min_lr_ratio"));
}

/// Variables a = [1, 2] and b = [5], loss = 3a₀ + 4a₁ + 12b, so ∇a = [3, 4], ∇b = [12]:
/// global norm sqrt(9 + 16 + 144) = sqrt(169) = 13. A third variable c never gets a gradient.
fn grads() -> Vec<Tensor> {
    let a = t1(&[1.0, 2.0]).set_requires_grad(true);
    let b = t1(&[5.0]).set_requires_grad(true);
    let c = t1(&[7.0]).set_requires_grad(true);
    let loss = (&a * t1(&[3.0, 4.0])).sum(tch::Kind::Float) + (&b * 12.0).sum(tch::Kind::Float);
    loss.backward();
    vec![a, b, c]
}

#[test]
fn grad_norm_clipping_matches_hand_computation() {
    let vars = grads();
    // max 6.5: scale 6.5/(13 + 1e-6) ≈ 0.5 → ∇a = [1.5, 2.0], ∇b = [6.0]
    let norm = clip_grad_norm(&vars, 6.5).unwrap();
    assert_close(norm, 13.0, 1e-9, "norm before clipping");
    assert_all_close(&v1(&vars[0].grad()), &[1.5, 2.0], 1e-6, "clipped ∇a");
    assert_all_close(&v1(&vars[1].grad()), &[6.0], 1e-6, "clipped ∇b");
    assert!(!vars[2].grad().defined(), "a variable without gradient is skipped");
    // a second call sees the clipped norm sqrt(1.5² + 2² + 6²) = sqrt(42.25) = 6.5 and, being
    // within 6.5 + 1e-6, leaves the gradients alone
    assert_close(clip_grad_norm(&vars, 6.5).unwrap(), 6.5, 1e-5, "norm after clipping");

    let vars = grads();
    assert_close(clip_grad_norm(&vars, 20.0).unwrap(), 13.0, 1e-9, "below the limit");
    assert_all_close(&v1(&vars[0].grad()), &[3.0, 4.0], 0.0, "unchanged ∇a");
    assert!(err_text(clip_grad_norm(&vars, 0.0).unwrap_err()).contains("max_norm"));
}

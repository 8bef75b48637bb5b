//! grail-policy: the candle model engine (model, loaders, generation, proof forward, GRPO, checkpoints).

"""chargen's training work in PyTorch (nn.LSTM or nn.GRU), for benchmarks/train_speed.py to time beside Keras.

PyTorch is no dependency of chargen: train_speed.py skips these variants where torch is not
importable. nn.GRU computes Keras's reset_after form of the GRU, nn.LSTM Keras's LSTM.
"""

from __future__ import annotations

import os


def torch_step(cell: str, cfg, batch_size: int, seed: int, threads: int | None):
    """(step(x, y) -> loss, description): the same model and train step in PyTorch, nn.LSTM or nn.GRU per layer."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch's OpenMP starts
    import torch
    from torch import nn

    default_threads = torch.get_num_threads()
    threads = threads or default_threads
    torch.manual_seed(seed)
    dims = (cfg.embed, *cfg.units)
    layer = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
    emb = nn.Embedding(cfg.vocab_size, cfg.embed)
    rnns = nn.ModuleList(layer(d, u, batch_first=True) for d, u in zip(dims, dims[1:]))
    out = nn.Linear(cfg.units[-1], cfg.vocab_size)
    params = [*emb.parameters(), *rnns.parameters(), *out.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    zeros = lambda u: torch.zeros(1, batch_size, u)  # noqa: E731
    state = [(zeros(u), zeros(u)) if cell == "lstm" else zeros(u) for u in cfg.units]

    def detached(s):
        return tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach()

    def step(x, y):
        torch.set_num_threads(threads)
        x, y = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        opt.zero_grad(set_to_none=True)
        h = emb(x)
        for i, rnn in enumerate(rnns):
            h, last = rnn(h, state[i])
            state[i] = detached(last)  # carried to the next batch, no gradient across batches
        loss = nn.functional.cross_entropy(out(h).reshape(-1, cfg.vocab_size), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        torch.set_num_threads(default_threads)
        return float(loss.detach())

    return step, f"torch {torch.__version__} (threads={threads}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})"

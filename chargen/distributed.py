"""Training on several devices (`--distribute mirrored|multiworker`) with the same maths as on one.

Data parallelism for stateful streams: with R replicas and B streams, replica r always owns
rows [r*B/R, (r+1)*B/R) of every batch. Each replica runs its own copy of the model for B/R
rows, so row i's state (the LSTM's (h, c), the GRU's h) lives on the replica that owns stream i
and carries from batch k to k+1 there, exactly as on one device. What makes that hold:
- the weights and the optimizer are mirrored (created under `strategy.scope()`), but every
  non-trainable variable of the training model (the recurrent state, the dropout RNG state) is
  created ON_READ: a local copy per replica that a replica's writes never send elsewhere
  (a mirrored state would be overwritten with, or averaged over, the other replicas' rows);
- each replica's loss is its sum of cross-entropies over the GLOBAL number of targets B*T and
  the replicas' losses and gradients are summed (all-reduce), which is the one-device mean and
  its gradient up to the order of float additions;
- the optimizer step runs once, in cross-replica context, on the summed gradient: Keras clips
  gradients before its own all-reduce, so `global_clipnorm` applied per replica would clip a
  different (partial) gradient than one device does;
- checkpoints hold the full (B, units) state in stream order (gathered from the replicas), so a
  run resumes with or without --distribute.
Dropout masks are drawn per replica (each replica's RNG is offset by its replica id), so with
dropout a distributed run differs from a one-device run, though it resumes exactly.
Validation stays on one device, on the loop's separate eval model.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from chargen.errors import CheckpointError, ConfigError, StateError
from chargen.net import get_cell
from chargen.net.model import build_model, check_state, get_state, recurrent_layers, set_state, state_shapes

RNG_STRIDE = 1_000_003  # replica r's dropout seed is the layer's seed + r * RNG_STRIDE


def tf_config_task() -> tuple[str, int, bool, int]:
    """(task type, task index, is chief, number of workers) from TF_CONFIG; ConfigError if unusable."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError("--distribute multiworker needs TF_CONFIG (the cluster and this worker's task) set on "
                          "every worker, e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:12345\", "
                          "\"host2:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}'; on one machine use "
                          "--distribute mirrored")
    try:
        doc = json.loads(raw)
        cluster, task = doc["cluster"], doc["task"]
        kind, index = task["type"], task["index"]
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        ok = isinstance(kind, str) and type(index) is int and 0 <= index < len(cluster[kind]) and workers > 0
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ConfigError(f"TF_CONFIG {raw!r} is not a cluster description: expected JSON with \"cluster\" "
                          "(task type -> list of host:port) and \"task\" (\"type\" and \"index\" into that list)")
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return kind, index, chief, workers


def worker_run_dir(run_dir: Path, distribute: str | None, resume: bool) -> Path:
    """Where this process writes: the run folder, or `NAME-workerI` beside it for a non-chief worker.

    Every worker of a multi-worker run saves (the state is gathered from all of them) and keeps
    its own copy, identical to the chief's, so that it can resume without a shared filesystem;
    beside the chief's folder it cannot clash with it on a shared one.
    """
    if distribute == "multiworker":
        kind, index, chief, _ = tf_config_task()
        return run_dir if chief else run_dir.with_name(f"{run_dir.name}-{kind}{index}")
    if distribute is None and resume and os.environ.get("TF_CONFIG"):  # resumed without the flag
        try:
            kind, index, chief, _ = tf_config_task()
        except ConfigError:
            return run_dir
        mine = run_dir.with_name(f"{run_dir.name}-{kind}{index}")
        if not chief and (mine / "last").exists():
            return mine
    return run_dir


_MIRRORED: dict[tuple[str, ...], Any] = {}


def _mirrored(devices: tuple[str, ...]):
    """One MirroredStrategy per device set and process: a new one numbers its collectives from the same start, and
    a second run with other shapes in the process then failed ("Shape mismatch in the collective instance 100")."""
    if devices not in _MIRRORED:
        import tensorflow as tf

        _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _MIRRORED[devices]


class Engine:
    """Builds the training model and runs its steps on one device or on R replicas.

    With distribute="none" everything is the plain one-device path (no strategy at all).
    """

    def __init__(self, mode: str, batch_size: int):
        import tensorflow as tf

        self.tf, self.mode, self.batch_size = tf, mode, batch_size
        self.strategy, self.devices, self.task = None, [], None
        if mode == "none":
            self.replicas = 1
        else:
            if mode == "mirrored":
                # Every GPU; without one, every logical CPU device (one, unless split for testing).
                self.devices = [d.name for d in tf.config.list_logical_devices("GPU")
                                or tf.config.list_logical_devices("CPU")]
                self.strategy = _mirrored(tuple(self.devices))
            else:
                self.task = tf_config_task()
                self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
                self.devices = list(self.strategy.extended.worker_devices)
            self.replicas = self.strategy.num_replicas_in_sync
        if batch_size % self.replicas:
            up = -(-batch_size // self.replicas) * self.replicas
            raise ConfigError(f"--batch-size {batch_size} cannot be split evenly over {self.replicas} replicas "
                              f"(--distribute {mode}: {', '.join(self.devices)}); each replica owns the same number "
                              f"of streams, so use a multiple of {self.replicas}, e.g. --batch-size {up}")
        self.rows = batch_size // self.replicas  # streams per replica
        self._state_fns = None

    @property
    def distributed(self) -> bool:
        return self.strategy is not None

    def describe(self) -> str:
        where = ", ".join(self.devices)
        if self.mode == "multiworker":
            kind, index, chief, workers = self.task
            where = f"{kind} {index} of {workers} workers{' (chief)' if chief else ''}, local devices {where}"
        return (f"distributed training ({self.mode}): {self.replicas} replicas, {self.rows} of the "
                f"{self.batch_size} streams each; {where}")

    def scope(self):
        return self.strategy.scope() if self.distributed else contextlib.nullcontext()

    def build(self, mcfg, tcfg, kernel: str):
        """The training model and its optimizer: for all B rows, or mirrored with B/R rows per replica."""
        import keras

        from chargen.precision import gpu_visible, training_precision

        if tcfg.precision == "auto":  # a TrainConfig that train() did not resolve: resolve it the same way
            tcfg = replace(tcfg, precision=training_precision(tcfg, mcfg.units, kernel, gpu_visible())[0])

        def optimizer(model):
            with self.scope():  # on R replicas: mirrored slots, like the weights
                opt = keras.optimizers.Adam(learning_rate=tcfg.lr, global_clipnorm=tcfg.clip or None)
                opt.build(model.trainable_variables)
            return opt

        if not self.distributed:
            model = build_model(mcfg, self.batch_size, tcfg.seq_len, kernel=kernel, precision=tcfg.precision)
            return model, optimizer(model)
        tf = self.tf

        def per_replica(next_creator, **kwargs):
            # Non-trainable = the recurrent state and the dropout RNG: one private copy per replica.
            if not kwargs.get("trainable", True):
                kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
                # Reads outside a replica (reset's zeros_like, the RNG saved) see replica 0's copy.
                kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
            return next_creator(**kwargs)

        with self.strategy.scope(), tf.variable_creator_scope(per_replica):
            model = build_model(mcfg, self.rows, tcfg.seq_len, kernel=kernel, precision=tcfg.precision)
        self._spread_rng(model)
        return model, optimizer(model)

    # ------------------------------------------------------------ the step

    def train_step(self, model, optimizer, lr_at: Callable | None, seq_len: int) -> Callable[[Any, Any], Any]:
        """step(x, y) on a full (B, T) batch -> the mean loss over its B*T targets (as on one device)."""
        tf, strategy = self.tf, self.strategy
        spec = tf.TensorSpec((self.batch_size, seq_len), tf.int32)

        def follow_schedule() -> None:
            if lr_at is not None:  # from the optimizer's own step count, which a resume restores
                optimizer.learning_rate.assign(lr_at(optimizer.iterations))

        if not self.distributed:
            @tf.function(input_signature=[spec, spec])
            def one_device(x, y):
                follow_schedule()
                with tf.GradientTape() as tape:
                    loss = mean_loss(model, x, y, True)
                optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
                return loss
            return one_device

        targets = float(self.batch_size * seq_len)  # the GLOBAL count: summing replicas gives the mean
        rows = self.rows

        def replica_step(x, y):
            # Every replica gets the whole (B, T) batch (B*T ints: nothing next to the model's work)
            # and keeps its own rows; a slice of static size keeps the model's fixed batch shape.
            first = tf.distribute.get_replica_context().replica_id_in_sync_group * rows
            x, y = (tf.slice(a, tf.stack([first, 0]), [rows, seq_len]) for a in (x, y))
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)) / targets
            grads = tape.gradient(loss, model.trainable_variables)
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, [loss, *grads])

        @tf.function(input_signature=[spec, spec])
        def step(x, y):
            follow_schedule()
            summed = strategy.experimental_local_results(strategy.run(replica_step, args=(x, y)))[0]
            optimizer.apply(summed[1:], model.trainable_variables)  # once, on the whole gradient
            return summed[0]

        return step

    # ------------------------------------------------------------ the training state

    def train_state(self, model) -> list[np.ndarray]:
        """What train_state.safetensors holds: per layer its state tensors (h, c or h), (B, units) in stream order, then
        the RNG states."""
        if not self.distributed:
            return [a for layer in get_state(model) for a in layer] + [v.numpy() for v in rng_vars(model)]
        gather, _, _ = self._state_functions(model)
        return [a.numpy() for a in gather()]

    def restore_train_state(self, model, mcfg, arrays: list[np.ndarray], where: Path) -> None:
        names, rng = get_cell(mcfg.cell).state, rng_vars(model)
        k = len(names)  # state tensors per layer
        n = k * mcfg.layers
        flat, seeds = arrays[:n], arrays[n:]
        if len(arrays) != n + len(rng) or [a.shape for a in seeds] != [tuple(v.shape) for v in rng]:
            raise CheckpointError(f"{where}: does not fit the model; cannot resume exactly")
        try:
            state = check_state([tuple(flat[i:i + k]) for i in range(0, n, k)], state_shapes(mcfg, self.batch_size),
                                names)
        except StateError as e:
            raise CheckpointError(f"{where}: {e}; cannot resume exactly") from None
        if not self.distributed:
            set_state(model, state)
            for v, a in zip(rng, seeds):
                v.assign(a)
            return
        _, scatter, _ = self._state_functions(model)
        scatter([a for layer in state for a in layer], seeds)

    def _spread_rng(self, model) -> None:
        if rng_vars(model):
            self._state_functions(model)[2]()

    def _state_functions(self, model):
        """Compiled once: gather the state (all replicas, in row order), scatter it back, offset the RNGs."""
        if self._state_fns is not None:
            return self._state_fns
        tf, strategy, rows = self.tf, self.strategy, self.rows
        state = [v for layer in recurrent_layers(model) for v in layer.states]
        rng = rng_vars(model)

        def replica_id():
            return tf.distribute.get_replica_context().replica_id_in_sync_group

        @tf.function
        def gather():
            local = strategy.run(lambda: [tf.identity(v.value) for v in state + rng])
            return ([strategy.gather(t, axis=0) for t in local[:len(state)]]  # replica order = stream order
                    + [strategy.experimental_local_results(t)[0] for t in local[len(state):]])  # replica 0's RNG

        @tf.function
        def scatter(full, seeds):
            def own(full, seeds):
                r = replica_id()
                for v, a in zip(state, full):
                    v.value.assign(a[r * rows:(r + 1) * rows])
                for v, s in zip(rng, seeds):
                    v.value.assign(s)
            strategy.run(own, args=(full, seeds))
            spread()

        @tf.function
        def spread():
            def offset():
                r = tf.cast(replica_id(), "int64")
                for v in rng:
                    v.value.assign(v.value + tf.cast(tf.stack([r * RNG_STRIDE, tf.zeros_like(r)]), v.dtype))
            strategy.run(offset)

        self._state_fns = (gather, scatter, spread)
        return self._state_fns


def mean_loss(model, x, y, training: bool):
    """Mean cross-entropy (nats per token) of the model's predictions for y."""
    import tensorflow as tf

    logits = model(x, training=training)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def rng_vars(model) -> list:
    """Dropout seed-generator states: not in get_weights(), but needed for an exact resume.

    Only the Dropout layers' (the stock LSTM and GRU have an unused one of their own, the fast
    layers none), so a run can be resumed with the other kernel."""
    return [layer.seed_generator.state for layer in model.layers if layer.name.startswith("dropout_")]

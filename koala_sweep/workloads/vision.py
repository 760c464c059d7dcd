"""Image classification workloads: Fashion-MNIST with a small CNN, CIFAR-10/100 with ResNets.

Images are held as normalised tensors on the training device and batched by index, so an epoch
costs the model's compute and nothing else (no DataLoader workers, no per-image transforms in
Python). CIFAR's augmentation (random crop with padding 4, horizontal flip) is done per batch on
the device.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import pickle
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from .base import (
    MetricSpec,
    Task,
    Workload,
    WorkloadArgs,
    WorkloadError,
    data_home,
    fixed_subset,
    shuffled_batches,
)
from .models import SmallCNN, cifar_resnet

CLASSIFICATION_METRICS = (
    MetricSpec("val_loss", "minimize", "mean cross-entropy on the held-out images"),
    MetricSpec("val_accuracy", "maximize", "top-1 accuracy on the held-out images"),
)

# ---------------------------------------------------------------------------- Fashion-MNIST

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise WorkloadError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise WorkloadError(f"{path}: expected {dims} values, found {data.size}")
    return data.reshape(dims)


def _fashion_dir_candidates(root: Path) -> list[Path]:
    return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]


def _find_fashion_files(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, name in _FASHION_FILES.items():
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def locate_fashion_mnist(data_root: str | None, download: bool) -> dict[str, Path]:
    """Find the four Fashion-MNIST files: in ``data_root`` if given, else in Debian's
    ``dataset-fashion-mnist`` package, else through torchvision's download."""
    searched: list[Path] = []
    roots = [Path(data_root)] if data_root else [DEBIAN_FASHION_MNIST, data_home()]
    for root in roots:
        for directory in _fashion_dir_candidates(root):
            searched.append(directory)
            files = _find_fashion_files(directory)
            if files:
                return files
    if data_root is None and download:
        import torchvision

        try:
            torchvision.datasets.FashionMNIST(str(data_home()), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(data_home()), train=False, download=True)
        except Exception as err:  # noqa: BLE001 - any network failure ends in the same advice
            raise WorkloadError(
                "Fashion-MNIST not found in "
                + ", ".join(map(str, searched))
                + f" and the download failed ({err}). Install the Debian package "
                "dataset-fashion-mnist or pass data_root."
            ) from None
        files = _find_fashion_files(data_home() / "FashionMNIST" / "raw")
        if files:
            return files
    raise WorkloadError(
        "Fashion-MNIST not found in "
        + ", ".join(map(str, searched))
        + ": install the Debian package dataset-fashion-mnist, pass data_root, or allow download"
    )


@lru_cache(maxsize=4)
def _load_fashion(data_root: str | None, download: bool) -> dict[str, np.ndarray]:
    files = locate_fashion_mnist(data_root, download)
    arrays = {key: _read_idx(path) for key, path in files.items()}
    if arrays["train_images"].shape[1:] != (28, 28) or len(arrays["train_images"]) != len(
        arrays["train_labels"]
    ):
        raise WorkloadError(f"Fashion-MNIST files in {files['train_images'].parent} are malformed")
    return arrays


def _normalised(images: np.ndarray, idx: Tensor, mean, std, device) -> Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images[idx.numpy()])).to(device)
    x = x.float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)  # grey images: N x 1 x H x W
    mean_t = torch.as_tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, device=device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


class _ClassificationTask(Task):
    def __init__(self, model, x_train, y_train, x_val, y_val, batch_size, device, seed):
        self.model = model.to(device)
        self.device = device
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.batch_size = batch_size
        self.steps_per_epoch = -(-len(y_train) // batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def augment(self, x: Tensor) -> Tensor:
        return x

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for idx in shuffled_batches(len(self.y_train), self.batch_size, self.generator):
            idx = idx.to(self.device)
            yield self.augment(self.x_train[idx]), self.y_train[idx]

    def per_sample_loss(self, output: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), targets, reduction="none")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for start in range(0, len(self.y_val), 1000):
            x, y = self.x_val[start : start + 1000], self.y_val[start : start + 1000]
            out = self.model(x).float()
            total_loss += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
        self.model.train()
        n = len(self.y_val)
        return {"val_loss": total_loss.item() / n, "val_accuracy": correct.item() / n}


class FashionMNISTArgs(WorkloadArgs):
    data_root: str | None = Field(
        None, description="directory with the four IDX files (gzipped or not)"
    )
    download: bool = Field(True, description="let torchvision download when nothing is local")
    train_size: int | None = Field(10000, ge=1, le=60000, description="None: all 60,000")
    val_size: int | None = Field(2000, ge=1, le=10000, description="None: all 10,000")
    batch_size: int = Field(128, ge=1)
    width: int = Field(32, ge=1, description="channels of the first conv layer")


class FashionMNISTCNN(Workload):
    name = "fashion_mnist_cnn"
    description = "Fashion-MNIST (real 28x28 clothing images, 10 classes) with a small CNN"
    data_source = (
        "data_root, else Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/), "
        "else torchvision's download"
    )
    args_model = FashionMNISTArgs
    metrics = CLASSIFICATION_METRICS

    def build(self, args: FashionMNISTArgs, device: torch.device, seed: int) -> Task:
        data = _load_fashion(args.data_root, args.download)
        train_idx = fixed_subset(len(data["train_labels"]), args.train_size)
        val_idx = fixed_subset(len(data["test_labels"]), args.val_size)
        x_train = _normalised(data["train_images"], train_idx, FASHION_MEAN, FASHION_STD, device)
        x_val = _normalised(data["test_images"], val_idx, FASHION_MEAN, FASHION_STD, device)
        y_train = torch.from_numpy(data["train_labels"][train_idx.numpy()].astype(np.int64))
        y_val = torch.from_numpy(data["test_labels"][val_idx.numpy()].astype(np.int64))
        torch.manual_seed(seed)
        model = SmallCNN(10, args.width)
        return _ClassificationTask(
            model,
            x_train,
            y_train.to(device),
            x_val,
            y_val.to(device),
            args.batch_size,
            device,
            seed,
        )


# ---------------------------------------------------------------------------------- CIFAR

CIFAR_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_CIFAR_LAYOUT = {
    10: (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    100: ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's python files are pickles of dicts of numpy arrays and lists. Only what those
    contain may be loaded: a file that asks for anything else is refused, not executed."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR file asks for {module}.{name}: refused")
        if module == "_codecs":
            return codecs.encode
        if name == "_reconstruct":
            # numpy 2 moved numpy.core to numpy._core; both names reach the same function.
            return importlib.import_module("numpy._core.multiarray")._reconstruct
        return getattr(np, name)


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, ValueError) as err:
        raise WorkloadError(f"{path}: not a CIFAR batch file ({err})") from None
    if len(labels) != len(data):
        raise WorkloadError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


@lru_cache(maxsize=2)
def load_cifar(classes: int, data_root: str | None, download: bool) -> dict[str, np.ndarray]:
    """CIFAR-10/100 in the standard python layout under ``data_root`` (or the data home),
    downloaded by torchvision when missing and allowed."""
    folder, train_files, test_files, label_key = _CIFAR_LAYOUT[classes]
    root = Path(data_root) if data_root else data_home()
    base = root / folder
    if not all((base / f).is_file() for f in train_files + test_files):
        if not download:
            raise WorkloadError(
                f"CIFAR-{classes} not found in {base} (expected {', '.join(train_files)} and "
                f"{', '.join(test_files)}); pass data_root or allow download"
            )
        import torchvision

        dataset = torchvision.datasets.CIFAR10 if classes == 10 else torchvision.datasets.CIFAR100
        try:
            dataset(str(root), train=True, download=True)
        except Exception as err:  # noqa: BLE001
            raise WorkloadError(
                f"CIFAR-{classes} not found in {base} and the download failed ({err})"
            ) from None
    train = [_read_cifar_batch(base / f, label_key) for f in train_files]
    test = [_read_cifar_batch(base / f, label_key) for f in test_files]
    return {
        "train_images": np.concatenate([d for d, _ in train]),
        "train_labels": np.concatenate([lab for _, lab in train]),
        "test_images": np.concatenate([d for d, _ in test]),
        "test_labels": np.concatenate([lab for _, lab in test]),
    }


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """The CIFAR recipe's augmentation for a whole batch at once: zero-pad by ``pad``, take a
    random crop of the original size, flip half of the images horizontally."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channels, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, out.flip(3), out)


class _CifarTask(_ClassificationTask):
    def __init__(self, *args, augment: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._augment = augment

    def augment(self, x: Tensor) -> Tensor:
        return random_crop_flip(x, self.generator) if self._augment else x


class CifarArgs(WorkloadArgs):
    data_root: str | None = Field(
        None, description="directory holding cifar-10-batches-py/ or cifar-100-python/"
    )
    download: bool = True
    train_size: int | None = Field(None, ge=1, le=50000, description="None: all 50,000")
    val_size: int | None = Field(None, ge=1, le=10000, description="None: all 10,000")
    batch_size: int = Field(128, ge=1)
    augment: bool = Field(True, description="random crop (padding 4) and horizontal flip")


def _cifar_workload(classes: int, depth: int) -> type[Workload]:
    class CifarResNet(Workload):
        name = f"cifar{classes}_resnet{depth}"
        description = f"CIFAR-{classes} with a ResNet-{depth} (CIFAR stem), the paper's recipe"
        data_source = "data_root (standard python layout), else torchvision's download"
        args_model = CifarArgs
        metrics = CLASSIFICATION_METRICS

        def build(self, args: CifarArgs, device: torch.device, seed: int) -> Task:
            data = load_cifar(classes, args.data_root, args.download)
            mean, std = CIFAR_STATS[classes]
            train_idx = fixed_subset(len(data["train_labels"]), args.train_size)
            val_idx = fixed_subset(len(data["test_labels"]), args.val_size)
            x_train = _normalised(data["train_images"], train_idx, mean, std, device)
            x_val = _normalised(data["test_images"], val_idx, mean, std, device)
            y_train = torch.from_numpy(data["train_labels"][train_idx.numpy()]).to(device)
            y_val = torch.from_numpy(data["test_labels"][val_idx.numpy()]).to(device)
            torch.manual_seed(seed)
            model = cifar_resnet(depth, classes)
            return _CifarTask(
                model,
                x_train,
                y_train,
                x_val,
                y_val,
                args.batch_size,
                device,
                seed,
                augment=args.augment,
            )

    CifarResNet.__name__ = CifarResNet.__qualname__ = f"Cifar{classes}ResNet{depth}"
    return CifarResNet


CIFAR_WORKLOADS = [_cifar_workload(c, d) for c in (10, 100) for d in (18, 50)]

"""automix.data: loaders (digits, CIFAR pickle / folder / download, ImageFolder, Tiny-ImageNet), the
uint8 cache, split_indices, the batched transforms and LazyImageDataset. Everything is written
under tmp_path; the download tests talk to an http.server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import shutil
import tarfile
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import automix.data as D
from automix.data import (
    DatasetNotFoundError,
    ImageData,
    LazyImageDataset,
    download_and_extract,
    list_datasets,
    load_dataset,
    normalize,
    random_crop_flip,
    split_indices,
)
from automix.data import cifar as cifar_mod
from automix.data import folder as folder_mod

SHARED_CIFAR = "/work/shared/data/cifar10/train"


# ----------------------------------------------------------------------------- helpers

def save_png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path)


def rgb(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_folder(root, classes=("a", "b"), per_class=2, size=8, ext=".png"):
    for ci, c in enumerate(classes):
        for i in range(per_class):
            path = os.path.join(root, c, f"{i}{ext}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(rgb(size, size, seed=10 * ci + i)).save(path)
    return root


def write_cifar_pickles(root, name, per_batch=2, seed=0):
    """A tiny copy of the official python-pickle release (bytes keys, like the Python 2 files)."""
    g = np.random.default_rng(seed)
    if name == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        files, label_key, n_cls = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
        meta = ("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072})
    else:
        folder = os.path.join(root, "cifar-100-python")
        files, label_key, n_cls = ["train", "test"], b"fine_labels", 100
        meta = ("meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                         b"coarse_label_names": [f"k{i}".encode() for i in range(20)]})
    os.makedirs(folder, exist_ok=True)
    written = {}
    for f in files:
        data = g.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in g.integers(0, n_cls, per_batch)]
        with open(os.path.join(folder, f), "wb") as fh:
            pickle.dump({b"data": data, label_key: labels, b"batch_label": b"x"}, fh, protocol=2)
        written[f] = (data, labels)
    with open(os.path.join(folder, meta[0]), "wb") as fh:
        pickle.dump(meta[1], fh, protocol=2)
    return folder, written


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; '/truncated/<file>' announces the full length but sends half."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path.startswith("/truncated/"):
                body = (www / self.path.split("/")[-1]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


# ----------------------------------------------------------------------------- registry / digits

def test_list_and_bad_names():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "imagefolder", "tiny-imagenet"]
    with pytest.raises(ValueError, match=r"name='mnist'.*cifar10.*tiny-imagenet"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match="img_size"):
        load_dataset("digits", img_size=0)
    with pytest.raises(TypeError, match="name"):
        load_dataset(3)
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("imagefolder")


def test_digits():
    pytest.importorskip("sklearn")
    d = load_dataset("digits")
    assert d.images.shape == (1797, 1, 16, 16) and d.images.dtype == torch.uint8
    assert d.labels.dtype == torch.int64 and d.labels.shape == (1797,)
    assert set(d.labels.tolist()) == set(range(10)) and d.classes == [str(i) for i in range(10)]
    assert d.num_classes == 10 and len(d) == 1797 and d.files is None
    assert int(d.images.max()) == 255 and int(d.images.min()) == 0
    assert len(d.mean) == len(d.std) == 1 and 0 < d.mean[0] < 1
    d8 = load_dataset("digits", img_size=8)
    from sklearn.datasets import load_digits
    expect = torch.as_tensor(load_digits().images * 255 / 16).round().to(torch.uint8)
    assert torch.equal(d8.images[:, 0], expect)   # native size: only the 0..16 -> 0..255 scaling
    assert load_dataset("digits", img_size=24).images.shape == (1797, 1, 24, 24)
    with pytest.raises(ValueError, match="no separate test split"):
        load_dataset("digits", split="test")


# ----------------------------------------------------------------------------- split_indices

def test_split_indices_basic_and_pinned():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    train, val = split_indices(1000, 0.1, seed=3)
    assert torch.equal(state, torch.get_rng_state())          # the global RNG is not touched
    assert len(val) == 100 and len(train) == 900 and train.dtype == val.dtype == torch.int64
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert not set(train.tolist()) & set(val.tolist())
    t2, v2 = split_indices(1000, 0.1, seed=3)
    assert torch.equal(train, t2) and torch.equal(val, v2)
    assert not torch.equal(val, split_indices(1000, 0.1, seed=4)[1])
    # Pinned: the split must not change across machines / versions.
    assert split_indices(10, 0.3, seed=0)[1].tolist() == [3, 5, 7]
    labels = torch.tensor([0, 1, 2] * 4)
    assert split_indices(12, 0.25, seed=123, labels=labels)[1].tolist() == [0, 1, 5]
    train, val = split_indices(5, 0.0, seed=0)
    assert len(val) == 0 and train.tolist() == [0, 1, 2, 3, 4]


def test_split_indices_stratified():
    order = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[order]
    train, val = split_indices(100, 0.2, seed=0, labels=labels)
    assert torch.bincount(labels[val]).tolist() == [10, 6, 4]
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    # Rounding: 7 classes x 3 samples, val 0.5 -> floor(10.5 + 0.5) = 11, never a whole class in val.
    labels = torch.arange(7).repeat_interleave(3)
    train, val = split_indices(21, 0.5, seed=1, labels=labels)
    assert len(val) == 11 and torch.bincount(labels[train], minlength=7).min() >= 1


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_split_indices_bad_values(bad):
    with pytest.raises(ValueError, match="val_split"):
        split_indices(10, bad, seed=0)


def test_split_indices_bad_other():
    with pytest.raises(TypeError, match="val_split"):
        split_indices(10, True, seed=0)
    with pytest.raises(ValueError, match="val_split.*empty validation"):
        split_indices(10, 0.01, seed=0)
    with pytest.raises(ValueError, match="val_split.*no training"):
        split_indices(1, 0.9, seed=0)
    with pytest.raises(ValueError, match="labels"):
        split_indices(10, 0.2, seed=0, labels=torch.zeros(9, dtype=torch.int64))
    with pytest.raises(ValueError, match="n must"):
        split_indices(0, 0.2, seed=0)


# ----------------------------------------------------------------------------- transforms

def test_random_crop_flip_is_shifted_copy_and_deterministic():
    x = torch.rand(16, 3, 6, 7)
    before = x.clone()
    y = random_crop_flip(x, pad=2, flip=False, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.equal(x, before)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    g = torch.Generator().manual_seed(0)        # documented draw order: dy [B], dx [B], flips [B]
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    for b in range(16):
        assert torch.equal(y[b], padded[b, :, dy[b]:dy[b] + 6, dx[b]:dx[b] + 7])
    y2 = random_crop_flip(x, pad=2, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)
    assert not torch.equal(y, random_crop_flip(x, pad=2, flip=False, generator=torch.Generator().manual_seed(1)))


def test_random_crop_flip_flips_and_formats():
    x = torch.arange(32 * 2 * 3 * 4, dtype=torch.float32).view(32, 2, 3, 4)
    y = random_crop_flip(x, pad=0, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = [torch.equal(y[b], x[b].flip(-1)) for b in range(32)]
    same = [torch.equal(y[b], x[b]) for b in range(32)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)
    xl = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    keep = xl.clone()
    yl = random_crop_flip(xl, pad=4, flip=True, generator=torch.Generator().manual_seed(0))
    assert yl.is_contiguous(memory_format=torch.channels_last) and torch.equal(xl, keep)
    yc = random_crop_flip(xl.contiguous(), pad=4, flip=True, generator=torch.Generator().manual_seed(0))
    assert yc.is_contiguous() and torch.equal(yc, yl)
    u8 = torch.randint(0, 256, (3, 1, 5, 5), dtype=torch.uint8)
    out = random_crop_flip(u8, pad=0, flip=False, generator=None)
    assert torch.equal(out, u8) and out.data_ptr() != u8.data_ptr()
    with pytest.raises(ValueError, match="pad"):
        random_crop_flip(x, pad=-1, flip=True, generator=None)
    with pytest.raises(ValueError, match="x must"):
        random_crop_flip(x[0], pad=1, flip=True, generator=None)
    with pytest.raises(TypeError, match="generator"):
        random_crop_flip(x, pad=1, flip=True, generator=0)


def test_normalize():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    y = normalize(x, (0.0, 0.2, 0.5), (1.0, 0.5, 0.25))
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)
    yl = normalize(x.contiguous(memory_format=torch.channels_last), (0.5,) * 3, (0.5,) * 3, dtype=torch.float16)
    assert yl.dtype == torch.float16 and yl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(TypeError, match="x_uint8"):
        normalize(x.float(), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="mean"):
        normalize(x, (0.5,), (0.5,) * 3)
    with pytest.raises(ValueError, match="std"):
        normalize(x, (0.5,) * 3, (0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="std"):
        normalize(x, (0.5,) * 3, torch.tensor([0.5, -1.0, 0.5]))


def test_normalize_builds_its_constants_once_per_device_not_per_batch():
    """Per batch they were two host-to-device copies (a GPU synchronisation each): now a cached pair."""
    from automix.data import transforms
    x = torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    first = normalize(x, mean, std)
    before = transforms._affine.cache_info()
    again = normalize(x, list(mean), torch.tensor(std, dtype=torch.float64))
    after = transforms._affine.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    assert torch.equal(first, again)
    m, s = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (mean, std))
    want = (x.double() / 255 - m) / s
    assert torch.allclose(first.double(), want, atol=1e-5)


# ----------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickle(tmp_path, name):
    folder, written = write_cifar_pickles(str(tmp_path), name)
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    test_file = "test_batch" if name == "cifar10" else "test"
    for data_dir in (str(tmp_path), folder):    # the parent or the pickle folder itself
        d = load_dataset(name, data_dir, cache_dir=str(tmp_path / "cache"))
        assert d.images.shape == (2 * len(train_files), 3, 32, 32) and d.images.dtype == torch.uint8
        assert d.labels.tolist() == sum((written[f][1] for f in train_files), [])
        assert torch.equal(d.images[0].reshape(-1), torch.from_numpy(written[train_files[0]][0][0]))
        assert d.num_classes == (10 if name == "cifar10" else 100)
        assert d.classes[3] == ("c3" if name == "cifar10" else "f3")
        assert len(d.mean) == 3 and d.files is None
    t = load_dataset(name, str(tmp_path), split="test")
    assert t.labels.tolist() == written[test_file][1]
    assert load_dataset(name, str(tmp_path), img_size=40).images.shape[-2:] == (40, 40)


def test_cifar_pickle_refuses_code(tmp_path):
    folder, _ = write_cifar_pickles(str(tmp_path), "cifar10")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(os.path.join(folder, "data_batch_1"), "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(ValueError, match="data_batch_1.*not allowed"):
        load_dataset("cifar10", str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_cifar_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="download=True"):
        load_dataset("cifar100", str(tmp_path))


def test_cifar_image_folder_splits(tmp_path):
    make_folder(str(tmp_path / "train"), classes=[f"k{i}" for i in range(10)], per_class=1, size=32)
    d = load_dataset("cifar10", str(tmp_path), cache_dir=str(tmp_path / "c"))  # picks <data_dir>/train
    assert d.images.shape == (10, 3, 32, 32) and d.mean == D.CIFAR10_MEAN
    with pytest.raises(ValueError, match="split='test'"):
        load_dataset("cifar10", str(tmp_path / "train"), split="test", cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="10 class folders, expected 100"):
        load_dataset("cifar100", str(tmp_path / "train"), cache_dir=str(tmp_path / "c"))


def _tarball(tmp_path, www):
    src = tmp_path / "src"
    _, written = write_cifar_pickles(str(src), "cifar10")
    archive = www / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest(), written


def test_download_good(tmp_path, server, monkeypatch):
    www, base = server
    _, md5, written = _tarball(tmp_path, www)
    monkeypatch.setattr(cifar_mod, "CIFAR10_URL", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", md5)
    dest = tmp_path / "dl"
    d = load_dataset("cifar10", str(dest), download=True)
    assert len(d) == 10 and d.labels[:2].tolist() == written["data_batch_1"][1]
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert len(load_dataset("cifar10", str(dest), split="test")) == 2


def test_download_bad_md5_and_truncated(tmp_path, server):
    www, base = server
    _, md5, _ = _tarball(tmp_path, www)
    dest = tmp_path / "dl"
    wrong = "0" * 32
    with pytest.raises(ValueError, match=f"cifar-10-python.tar.gz.*expected {wrong}, got {md5}"):
        download_and_extract(f"{base}/cifar-10-python.tar.gz", wrong, str(dest))
    assert list(dest.iterdir()) == []                       # no bad archive, no temp file
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz.*truncated"):
        download_and_extract(f"{base}/truncated/cifar-10-python.tar.gz", md5, str(dest))
    assert list(dest.iterdir()) == []
    with pytest.raises(OSError, match="missing.tar.gz"):
        download_and_extract(f"{base}/missing.tar.gz", md5, str(dest))
    assert list(dest.iterdir()) == []
    download_and_extract(f"{base}/cifar-10-python.tar.gz", md5, str(dest))
    assert (dest / "cifar-10-batches-py" / "batches.meta").is_file()


@pytest.mark.skipif(not os.path.isdir(SHARED_CIFAR), reason="shared CIFAR-10 copy not present")
def test_shared_cifar_subset(tmp_path):
    root = tmp_path / "cifar"
    for c in sorted(os.listdir(SHARED_CIFAR)):
        os.makedirs(root / c)
        for f in sorted(os.listdir(os.path.join(SHARED_CIFAR, c)))[:2]:
            shutil.copy(os.path.join(SHARED_CIFAR, c, f), root / c / f)
    d = load_dataset("cifar10", str(root), cache_dir=str(tmp_path / "cache"))
    assert d.images.shape == (20, 3, 32, 32) and d.labels.tolist() == [i // 2 for i in range(20)]
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"
    assert 40 < d.images.float().mean() < 200


# ----------------------------------------------------------------------------- ImageFolder

def test_image_folder_modes(tmp_path):
    root = tmp_path / "imgs"
    base = rgb(8, 8)
    save_png(str(root / "a" / "rgb.png"), base)
    Image.fromarray(base[..., 0]).convert("L").save(_mk(root / "a" / "grey.jpg"), quality=100)
    rgba = np.concatenate([base, np.full((8, 8, 1), 7, np.uint8)], axis=2)
    save_png(str(root / "b" / "rgba.png"), rgba)
    Image.fromarray(base).convert("P", palette=Image.ADAPTIVE, colors=4).save(root / "b" / "pal.png")
    save_png(str(root / "c" / "deep.png"), np.full((8, 8), 65535, np.uint16))
    save_png(str(root / "c" / "half.png"), np.full((12, 12), 32896, np.uint16))   # resized to 8x8
    (root / "c" / "notes.txt").write_text("ignored: not an image extension")
    d = load_dataset("imagefolder", str(root), cache_dir=str(tmp_path / "cache"))
    assert d.classes == ["a", "b", "c"] and d.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert d.images.shape == (6, 3, 8, 8) and d.images.dtype == torch.uint8
    files = ["grey.jpg", "rgb.png", "pal.png", "rgba.png", "deep.png", "half.png"]  # sorted per class
    img = {name: d.images[i] for i, name in enumerate(files)}
    assert torch.equal(img["rgb.png"], torch.from_numpy(base).permute(2, 0, 1))
    assert torch.equal(img["rgba.png"], torch.from_numpy(base).permute(2, 0, 1))   # alpha dropped
    assert torch.equal(img["grey.jpg"][0], img["grey.jpg"][1])                     # grey -> 3 equal
    assert int((img["grey.jpg"][0].int() - torch.from_numpy(base[..., 0]).int()).abs().max()) <= 8
    assert img["pal.png"].unique().numel() <= 12
    assert int(img["deep.png"].min()) == 255 and int(img["half.png"].max()) == 128   # 16 bit -> 8 bit
    big = load_dataset("imagefolder", str(root), cache_dir=str(tmp_path / "cache"), img_size=20)
    assert big.images.shape == (6, 3, 20, 20)


def _mk(path):
    os.makedirs(path.parent, exist_ok=True)
    return path


def _jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(rgb(32, 32)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("content", ["truncated", "empty", "text"])
def test_image_folder_bad_file(tmp_path, content):
    root = make_folder(str(tmp_path / "imgs"))
    data = {"truncated": _jpeg_bytes()[:300], "empty": b"", "text": b"hello, I am not a JPEG\n"}[content]
    bad = os.path.join(root, "b", "zz_bad.jpg")
    with open(bad, "wb") as f:
        f.write(data)
    with pytest.raises(ValueError, match="zz_bad.jpg"):
        load_dataset("imagefolder", root, cache_dir=str(tmp_path / "cache"))


def test_image_folder_layout_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_dataset("imagefolder", str(missing))
    with pytest.raises(ValueError, match="nope"):               # also a ValueError
        load_dataset("imagefolder", missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*no class sub-folders"):
        load_dataset("imagefolder", str(empty))
    root = make_folder(str(tmp_path / "imgs"))
    os.makedirs(os.path.join(root, "c_empty"))
    with pytest.raises(ValueError, match="c_empty.*no image files"):
        load_dataset("imagefolder", root)
    with pytest.raises(ValueError, match="serves split 'train' only"):
        load_dataset("imagefolder", str(tmp_path / "imgs"), split="test")


def test_cache_reused_and_invalidated(tmp_path, monkeypatch):
    root = make_folder(str(tmp_path / "imgs"))
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", root, cache_dir=str(cache))
    entries = os.listdir(cache)
    assert len(entries) == 1 and entries[0].startswith("imagefolder-") and entries[0].endswith(".pt")
    real = folder_mod.decode_files

    def fail(*a, **k):
        raise AssertionError("decoded although the cache is current")

    monkeypatch.setattr(folder_mod, "decode_files", fail)
    again = load_dataset("imagefolder", root, cache_dir=str(cache))
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    save_png(os.path.join(root, "b", "9.png"), rgb(seed=9))
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset("imagefolder", root, cache_dir=str(cache))   # a new file -> a new decode
    monkeypatch.setattr(folder_mod, "decode_files", real)
    grown = load_dataset("imagefolder", root, cache_dir=str(cache))
    assert len(grown) == 5 and torch.equal(grown.images[:4], first.images)
    assert not [f for f in os.listdir(cache) if f.startswith(".tmp")]
    # A damaged cache file is ignored with a warning and rewritten.
    newest = max((cache / f for f in os.listdir(cache)), key=os.path.getmtime)
    newest.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        assert torch.equal(load_dataset("imagefolder", root, cache_dir=str(cache)).images, grown.images)
    monkeypatch.setenv("AUTOMIX_CACHE", str(tmp_path / "envcache"))
    load_dataset("imagefolder", root)
    assert len(os.listdir(tmp_path / "envcache")) == 1


def test_tiny_imagenet(tmp_path):
    root = tmp_path / "tiny"
    wnids = ["n02", "n01"]
    (root / "train").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        for i in range(3):
            Image.fromarray(rgb(64, 64, seed=k * 10 + i)).save(_mk(root / "train" / w / "images" / f"{w}_{i}.JPEG"))
        (root / "train" / w / f"{w}_boxes.txt").write_text("boxes\n")
    lines = []
    for i in range(4):
        Image.fromarray(rgb(64, 64, seed=100 + i)).convert("L").save(_mk(root / "val" / "images" / f"val_{i}.JPEG"))
        lines.append(f"val_{i}.JPEG\t{wnids[i % 2]}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    tr = load_dataset("tiny-imagenet", str(root), cache_dir=str(tmp_path / "c"))
    assert tr.classes == ["n01", "n02"] and tr.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert tr.images.shape == (6, 3, 64, 64) and tr.mean == D.TINY_IMAGENET_MEAN
    te = load_dataset("tiny-imagenet", str(root), split="test", cache_dir=str(tmp_path / "c"))
    assert te.labels.tolist() == [1, 0, 1, 0] and te.images.shape == (4, 3, 64, 64)
    assert load_dataset("tiny-imagenet", str(root), cache_dir=str(tmp_path / "c"), img_size=32).images.shape[-1] == 32
    with pytest.raises(FileNotFoundError, match="missing"):
        load_dataset("tiny-imagenet", str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- lazy

def test_lazy_dataset(tmp_path):
    root = make_folder(str(tmp_path / "big"), per_class=3, size=120)
    d = load_dataset("imagefolder", root, cache_dir=str(tmp_path / "c"))
    assert d.images is None and len(d.files) == 6 and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert not (tmp_path / "c").exists()                             # nothing decoded or cached
    ev = LazyImageDataset(d, 32, train=False)
    x, y = ev[4]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 1
    assert torch.equal(ev[4][0], x)
    centre = Image.open(d.files[4]).convert("RGB").resize((32, 32), Image.BILINEAR, box=(7.5, 7.5, 112.5, 112.5))
    assert torch.equal(x, torch.from_numpy(np.array(centre)).permute(2, 0, 1))
    tr = LazyImageDataset(d, 24, train=True)
    torch.manual_seed(5)
    a = torch.stack([tr[i][0] for i in range(6)])
    tr2 = LazyImageDataset(d, 24, train=True)
    b = torch.stack([tr2[i][0] for i in range(6)])
    assert a.shape == (6, 3, 24, 24) and torch.equal(a, b)          # seeded from torch.initial_seed()
    loader = torch.utils.data.DataLoader(tr, batch_size=3, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    xs, ys = next(iter(loader))
    assert xs.shape == (3, 3, 24, 24) and ys.dtype == torch.int64
    assert load_dataset("imagefolder", root, img_size=32, cache_dir=str(tmp_path / "c")).images.shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="files"):
        LazyImageDataset(load_dataset("imagefolder", root, img_size=32, cache_dir=str(tmp_path / "c")), 32, True)
    small = make_folder(str(tmp_path / "small"))
    assert load_dataset("imagefolder", small, img_size=128).images is None   # > 96 -> lazy


def test_lazy_random_resized_box_in_bounds():
    g = torch.Generator().manual_seed(0)
    for wh in [(120, 100), (500, 40), (40, 500), (1, 1)]:
        for _ in range(50):
            left, top, right, bottom = D.lazy.random_resized_box(wh, g)
            assert 0 <= left < right <= wh[0] and 0 <= top < bottom <= wh[1]


def test_image_data_checks():
    with pytest.raises(TypeError, match="labels"):
        ImageData(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2), ["a"], (0.5,), (0.5,))
    with pytest.raises(ValueError, match="neither"):
        ImageData(None, torch.zeros(2, dtype=torch.int64), ["a"], (0.5,), (0.5,))
    assert issubclass(DatasetNotFoundError, FileNotFoundError) and issubclass(DatasetNotFoundError, ValueError)


def test_decode_pool_matches_single_process(tmp_path):
    root = make_folder(str(tmp_path / "imgs"), per_class=4, size=10)
    _, entries, _ = folder_mod.scan_image_folder(root)
    paths = [e[0] for e in entries]
    one, bad_one = D.decode.decode_files(paths, 8, workers=1)
    two, bad_two = D.decode.decode_files(paths, 8, workers=2)
    assert one.shape == (8, 3, 8, 8) and torch.equal(one, two) and bad_one == bad_two == []
    (tmp_path / "imgs" / "a" / "0.png").write_bytes(b"not an image")
    for workers in (1, 2):
        kept, bad = D.decode.decode_files(paths, 8, workers=workers, skip_bad=True)
        assert bad == [0] and torch.equal(kept, one[1:])

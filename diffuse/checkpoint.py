"""Checkpoints: a directory with model.safetensors (EMA weights) and config.json, plus the
training state for resuming (training_state.safetensors + training_state.json). No pickles.

A save is a small transaction with one commit point. Every file is first written in full under
a temporary name and fsynced; then a journal (.commit.json) naming which temporary file
replaces which is renamed into place: that one rename commits the save. Only then are the files
renamed over the old ones and the journal removed. A crash before the journal's rename leaves
the previous checkpoint whole (its stray temporaries are removed by the next training start); a
crash after it leaves a journal that the next reader rolls forward, so the new checkpoint is
whole. config.json records the SHA-256 of the weights, so a corrupted file is still detected on
load instead of producing garbage.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .model import TextToImageModel

FORMAT, VERSION = "diffuse-checkpoint", 1
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
STATE_FILE, STATE_JSON = "training_state.safetensors", "training_state.json"
JOURNAL = ".commit.json"  # present only between a save's commit point and its last rename


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _temp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries (the renames in it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage_json(path: Path, data: dict) -> Path:
    tmp = _temp_path(path)
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        _fsync(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _commit(d: Path, staged: list[tuple[Path, Path]]) -> None:
    """The commit point: one rename puts the journal of staged renames in place."""
    tmp = _stage_json(d / JOURNAL, {"renames": [[t.name, p.name] for t, p in staged]})
    os.replace(tmp, d / JOURNAL)
    _fsync(d)


def roll_forward(directory: str | Path) -> None:
    """Finish a committed save that a crash interrupted: do the journal's renames that are left
    (each is idempotent: a temporary file already renamed is simply gone), then drop the journal."""
    d = Path(directory)
    try:
        renames = json.loads((d / JOURNAL).read_text())["renames"]
    except FileNotFoundError:
        return
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{d / JOURNAL} is damaged: the last save of {str(d)!r} cannot be completed") from None
    try:
        for tmp, name in renames:
            if (d / tmp).exists():
                os.replace(d / tmp, d / name)
        _fsync(d)
        (d / JOURNAL).unlink(missing_ok=True)
    except PermissionError:
        raise CheckpointError(f"the last save of {str(d)!r} was interrupted and cannot be completed here "
                              "(no write permission): load it once where it can be written") from None
    except FileNotFoundError:
        pass  # another process completed the same save at the same time


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files of saves killed before their commit point (call it only while no
    save is running in `directory`, e.g. when training starts); returns what was removed."""
    d = Path(directory)
    roll_forward(d)
    stale = [p for p in d.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _stage_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[Path, str]:
    """Write to a temporary file beside `path`; return it and its SHA-256."""
    tmp = _temp_path(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        _fsync(tmp)
    except SafetensorError as e:  # safetensors reports a failed write (a full disk) as its own error
        tmp.unlink(missing_ok=True)
        raise OSError(str(e).removeprefix("Error while serializing: ")) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, sha256_file(tmp)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """An optimizer's state as flat tensors `optim.<param index>.<name>` (safetensors holds no
    nesting), and its param groups, which are plain numbers for the JSON beside them."""
    state = opt.state_dict()
    tensors = {f"optim.{idx}.{name}": v if torch.is_tensor(v) else torch.tensor(v)
               for idx, st in state["state"].items() for name, v in st.items()}
    return tensors, state["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> None:
    """What optimizer_tensors saved, back into `opt` (the same parameters in the same order)."""
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def save_checkpoint(directory: str | Path, model: TextToImageModel, info: dict,
                    state_tensors: dict[str, torch.Tensor] | None = None, state_info: dict | None = None) -> str:
    """Save `model` (pass the EMA copy) and, optionally, the training state. Returns the model hash.
    `info` holds the data summary and training figures that config.json records.

    All or nothing (module docstring): a crash at any instant leaves either the previous
    checkpoint or this one, whole."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        tmp, digest = _stage_tensors(d / MODEL_FILE, model.state_dict())
        staged.append((tmp, d / MODEL_FILE))
        if state_tensors is not None:
            tmp, state_digest = _stage_tensors(d / STATE_FILE, state_tensors)
            staged.append((tmp, d / STATE_FILE))
            staged.append((_stage_json(d / STATE_JSON, {**(state_info or {}), "model_sha256": digest,
                                                        "sha256": state_digest}), d / STATE_JSON))
        staged.append((_stage_json(d / CONFIG_FILE, {"format": FORMAT, "version": VERSION, **model.config(), **info,
                                                     "weights_sha256": digest}), d / CONFIG_FILE))
        _commit(d, staged)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    roll_forward(d)
    return digest


# The models the project trained and ships (README: how), by name; `shapes` is used wherever no
# model is named. A name always means the bundled model: a folder called so is `./shapes`.
BUNDLED_MODELS = {name: Path(__file__).parent / "models" / name for name in ("shapes", "emoji", "shapes-fast")}
BUNDLED_MODEL = BUNDLED_MODELS["shapes"]


def model_dir(directory: str | Path | None) -> Path:
    """The checkpoint directory to use: a bundled model's name, a path, or the bundled shapes model."""
    if not directory:
        return BUNDLED_MODEL
    return BUNDLED_MODELS.get(str(directory), Path(directory))


def model_name(directory: Path) -> str:
    """How a model is named in PNG metadata, /v1/models and logs: a bundled model by its name (what
    --model takes), any other by its folder's name."""
    for name, path in BUNDLED_MODELS.items():
        if directory == path:
            return name
    return directory.name


def read_config(directory: str | Path) -> dict:
    d = Path(directory)
    if not d.exists():
        raise CheckpointError(f"checkpoint {str(d)!r} does not exist")
    if not d.is_dir():
        raise CheckpointError(f"checkpoint {str(d)!r} is not a directory (expected {CONFIG_FILE} and {MODEL_FILE} inside)")
    roll_forward(d)
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (d / name).is_file():
            raise CheckpointError(f"checkpoint {str(d)!r} has no {name}")
    try:
        cfg = json.loads((d / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{d / CONFIG_FILE} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{d / CONFIG_FILE} is not a diffuse checkpoint config")
    if cfg.get("version") != VERSION:
        raise CheckpointError(f"checkpoint version {cfg.get('version')} is not supported (this diffuse reads {VERSION})")
    return cfg


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[TextToImageModel, dict]:
    """The model in eval mode and its config; any problem is a one-line CheckpointError."""
    d = Path(directory)
    cfg = read_config(d)
    if sha256_file(d / MODEL_FILE) != cfg.get("weights_sha256"):
        raise CheckpointError(f"{d / MODEL_FILE} does not match the hash in {CONFIG_FILE}: corrupt or partly written")
    try:
        model = TextToImageModel.from_config(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG_FILE} describes no model this diffuse can build ({type(e).__name__}: {e})") from None
    try:
        weights = load_file(str(d / MODEL_FILE))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{d / MODEL_FILE} is not a readable safetensors file ({e})") from None
    missing, unexpected = model.state_dict().keys() - weights.keys(), weights.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise CheckpointError(f"{d / MODEL_FILE} does not fit its config: {len(missing)} missing and "
                              f"{len(unexpected)} unexpected tensors (e.g. {sorted(missing or unexpected)[0]})")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{d / MODEL_FILE} does not fit its config: {str(e).splitlines()[-1].strip()}") from None
    return model.to(device).eval().requires_grad_(False), cfg


def load_training_state(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    d = Path(directory)
    cfg = read_config(d)
    if not (d / STATE_FILE).is_file() or not (d / STATE_JSON).is_file():
        raise CheckpointError(f"checkpoint {str(d)!r} has no training state to resume from ({STATE_FILE})")
    info = json.loads((d / STATE_JSON).read_text())
    if info.get("model_sha256") != cfg.get("weights_sha256"):
        raise CheckpointError(f"training state in {str(d)!r} belongs to other weights than {MODEL_FILE}")
    if sha256_file(d / STATE_FILE) != info.get("sha256"):
        raise CheckpointError(f"{d / STATE_FILE} is corrupt or partly written")
    return load_file(str(d / STATE_FILE)), info

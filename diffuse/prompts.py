"""Files of prompts for `diffuse generate --prompts FILE`.

A non-empty line is either a prompt, or a JSON object with "prompt" and any of the per-prompt
fields in PER_PROMPT; the command's options fill in the rest. Prompt i (counted from 0 over the
non-empty lines) starts at seed + SEED_STRIDE * i unless its line gives a seed, so every image
depends on its line alone, never on how the file is shared among processes.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DiffuseError, RequestError
from .pipeline import GenerateRequest

PER_PROMPT = ("prompt", "negative_prompt", "n", "seed", "steps", "sampler", "schedule", "guidance", "eta",
              "width", "height", "variation_seed", "variation_strength")
SEED_STRIDE = 1000  # prompt i's images use seeds seed + 1000 i + k, k < n <= 64: no two prompts share one


@dataclass(frozen=True)
class PromptEntry:
    where: str    # "FILE:LINE", for messages
    fields: dict  # "prompt" and any other PER_PROMPT fields


def parse_line(line: str, where: str) -> PromptEntry:
    if not line.startswith("{"):
        return PromptEntry(where, {"prompt": line})
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as e:
        raise DiffuseError(f"{where}: a line starting with '{{' must be a JSON object ({e.msg})") from None
    unknown = sorted(fields.keys() - set(PER_PROMPT))
    if unknown:
        raise DiffuseError(f"{where}: unknown field {unknown[0]!r}; per-prompt fields are {', '.join(PER_PROMPT)}")
    if "prompt" not in fields:
        raise DiffuseError(f"{where}: the object has no \"prompt\"")
    if "seed" in fields and fields["seed"] is None:
        # A random seed would differ between processes and between runs.
        raise DiffuseError(f"{where}: seed must be an integer (leave it out for the file's default)")
    return PromptEntry(where, fields)


def read_prompt_file(path: str | Path) -> list[PromptEntry]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DiffuseError(f"prompt file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DiffuseError(f"prompt file {str(path)!r} is not readable UTF-8 text ({type(e).__name__})") from None
    entries = [parse_line(line.strip(), f"{path}:{n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not entries:
        raise DiffuseError(f"prompt file {str(path)!r} holds no prompts")
    return entries


def requests_from_entries(entries: list[PromptEntry], defaults: dict, seed: int) -> list[GenerateRequest]:
    """One request per entry: its own fields over `defaults`, seed + SEED_STRIDE * i if it gives none."""
    requests = []
    for i, entry in enumerate(entries):
        try:
            requests.append(GenerateRequest(**{**defaults, "seed": seed + SEED_STRIDE * i, **entry.fields}))
        except DiffuseError as e:
            raise RequestError(f"{entry.where}: {e}") from None
    return requests


def check_distinct_outputs(entries: list[PromptEntry], plans: list[tuple[list[Path], Path]], grid: bool) -> None:
    """No two prompts may write the same file (same prompt and seed): one would silently replace the other."""
    owner: dict[Path, str] = {}
    for entry, (paths, grid_path) in zip(entries, plans):
        for path in paths + ([grid_path] if grid else []):
            if owner.setdefault(path, entry.where) != entry.where:
                raise DiffuseError(f"{owner[path]} and {entry.where} would both write {path}: give one another seed")

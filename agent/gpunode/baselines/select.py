"""Where baselines live and which one fits the GPUs of a bench result.

Search order: site directories (`--baselines DIR`, then config `baselines_dir`, then
/etc/gpunode/baselines when it exists), then the shipped ones (the repository's baselines/
directory, installed as the package gpunode.shipped_baselines). A site file whose `name` equals
a shipped one replaces it; when site and shipped baselines both match the hardware, the site
one wins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from gpunode.baselines.schema import Baseline, BaselineError, load_baseline, read_yaml
from gpunode.exits import USAGE_EXIT

DEFAULT_SITE_DIR = "/etc/gpunode/baselines"


class NoBaselineError(BaselineError):
    """No baseline fits this hardware: the figures cannot be judged (UNKNOWN, exit 3)."""

    exit_code = 3


class BaselineMismatchError(BaselineError):
    """--baseline names a baseline for other hardware than the results come from: its verdicts
    would be meaningless (1 H100 judged against 8 A100s), so it is refused unless forced (exit 3:
    bad input, gpunode.exits)."""

    exit_code = USAGE_EXIT


def shipped_dir() -> Path:
    return Path(str(resources.files("gpunode.shipped_baselines")))


def site_dirs(explicit: str | os.PathLike | None = None, config_dir: str | None = None) -> list[Path]:
    """--baselines DIR, else the config's baselines_dir, else /etc/gpunode/baselines if present."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise BaselineError(f"{path}: baselines directory not found")
        return [path]
    if config_dir:
        path = Path(config_dir)
        if not path.is_dir():
            raise BaselineError(f"{path}: baselines_dir from the config is not a directory")
        return [path]
    default = Path(DEFAULT_SITE_DIR)
    return [default] if default.is_dir() else []


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    origin: str  # site | shipped


@dataclass(frozen=True)
class Selection:
    baseline: Baseline
    origin: str  # site | shipped | file
    reason: str  # how it was chosen, for the report


class Catalogue:
    """The baselines that can be named or auto-selected: site directories first, then shipped."""

    def __init__(self, site: Sequence[Path] = (), shipped: Path | None = None, include_shipped: bool = True):
        self.site = [Path(p) for p in site]
        self.shipped = (shipped or shipped_dir()) if include_shipped else None
        self._files: list[Entry] | None = None

    def all_files(self) -> list[Entry]:
        """Every file, site directories first; names are unique within one origin."""
        if self._files is None:
            files: list[Entry] = []
            dirs = [(d, "site") for d in self.site] + ([(self.shipped, "shipped")] if self.shipped else [])
            for directory, origin in dirs:
                for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
                    name = _declared_name(path)
                    twin = next((f for f in files if f.name == name and f.origin == origin), None)
                    if twin is not None:
                        raise BaselineError(f"{path}: name {name!r} is also used by {twin.path}")
                    files.append(Entry(name, path, origin))
            self._files = files
        return self._files

    def entries(self) -> list[Entry]:
        """One entry per name; a site file hides a shipped file of the same name."""
        seen: dict[str, Entry] = {}
        for entry in self.all_files():
            seen.setdefault(entry.name, entry)
        return list(seen.values())

    def find(self, name: str, relative_to: Path | None = None) -> Path | None:
        """A baseline by name; from inside a file, never that file itself (so a site file may
        extend the shipped baseline whose name it takes over)."""
        for entry in self.all_files():
            if entry.name == name and (relative_to is None or entry.path.resolve() != relative_to.resolve()):
                return entry.path
        return None

    def load(self, path: Path) -> Baseline:
        return load_baseline(path, find=self.find)

    def resolve(self, name_or_path: str | os.PathLike, gpus: dict | None = None, force: bool = False) -> Selection:
        """--baseline NAME|FILE; with the results' `gpus`, refuse one made for other hardware
        unless `force` (see fit())."""
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.is_file():
                raise BaselineError(f"{path}: baseline file not found")
            chosen = Selection(self.load(path), "file", f"--baseline {path}")
        else:
            found = self.find(str(name_or_path))
            if found is None:
                known = ", ".join(sorted(e.name for e in self.entries())) or "none"
                raise BaselineError(f"no baseline named {name_or_path!r}; known: {known}")
            origin = next(e.origin for e in self.entries() if e.path == found)
            chosen = Selection(self.load(found), origin, f"--baseline {name_or_path}")
        return chosen if gpus is None else fit(chosen, gpus, force)

    def select(self, gpus: dict) -> Selection:
        """The baseline for these GPUs: site before shipped, then the most specific match."""
        candidates: dict[str, list[Baseline]] = {"site": [], "shipped": []}
        for entry in self.entries():
            baseline = self.load(entry.path)
            if baseline.match is not None and baseline.match.check(gpus) is None:
                candidates[entry.origin].append(baseline)
        tier = "site" if candidates["site"] else "shipped"
        found = sorted(candidates[tier], key=_specificity, reverse=True)
        if not found:
            raise NoBaselineError(
                f"no baseline matches {describe_gpus(gpus)}; give --baseline FILE, or record this host's own "
                f"with `gpunode baseline record --name NAME -o DIR/NAME.yaml` and pass --baselines DIR"
            )
        if len(found) > 1 and _specificity(found[0]) == _specificity(found[1]):
            tied = ", ".join(f"{b.name} ({b.path})" for b in found if _specificity(b) == _specificity(found[0]))
            raise BaselineError(f"several baselines match {describe_gpus(gpus)} equally: {tied}; choose one with --baseline")
        best = found[0]
        assert best.match is not None
        return Selection(best, tier, f"auto: {describe_gpus(gpus)} matches {best.match.describe()}")


def fit(selection: Selection, gpus: dict, force: bool = False) -> Selection:
    """A baseline named on the command line against the GPUs of the results it will judge.
    A mismatch raises BaselineMismatchError; forced, the selection's reason says what was forced
    (shown in the report and its JSON). A baseline without a match section cannot be checked."""
    match = selection.baseline.match
    why = match.check(gpus) if match is not None else None
    if why is None:
        return selection
    assert match is not None
    what = f"baseline {selection.baseline.name} is for {match.describe()}, but the results are from " \
        f"{describe_gpus(gpus)} ({why})"
    if not force:
        raise BaselineMismatchError(f"{what}: its verdicts would judge other hardware; choose a baseline "
                                    "for these GPUs, or pass --force-baseline to judge against it anyway")
    return replace(selection, reason=f"{selection.reason}, forced: {what}")


def _specificity(baseline: Baseline) -> tuple[int, int]:
    """An exact GPU count beats none; then more criteria beat fewer."""
    match = baseline.match
    assert match is not None
    return (1 if len(match.gpu_count) == 1 else 0, match.criteria)


def _declared_name(path: Path) -> str:
    data = read_yaml(path)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise BaselineError(f"{path}: name: required")
    return name


def describe_gpus(gpus: dict) -> str:
    devices = gpus.get("devices") or []
    if not gpus.get("available") or not devices:
        return f"no GPUs ({gpus.get('error') or 'none listed'})"
    names = sorted({f"{d.get('name')} ({d.get('pci_device')})" for d in devices})
    return f"{gpus.get('count', len(devices))} × {' + '.join(names)}"

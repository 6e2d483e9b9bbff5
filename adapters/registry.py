"""The adapter registry: immutable versions under aliases.

Publishing validates a PEFT LoRA directory, copies it into the adapter store atomically (temp
dir + rename) under a never-reused name ``<alias>-v<N>``, and records it. Publishing the same
content again returns the existing version. The first version of an alias goes live at once,
unless the publisher asks for a candidate (the trainer does: its versions roll out as canaries
even against the base); later ones start as candidates for a rollout. An alias may exist
with no version at all: it then serves the base model, and collects the traffic a first
adapter is trained on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.errors import AdapterError
from adapters.locking import lock_alias
from adapters.tables import AdapterVersion, Alias, Experiment, Rollout, utcnow
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE, InvalidAdapter, validate_adapter

log = logging.getLogger("loragate.registry")

_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}\Z")  # \Z: "$" would let "name\n" pass
_VERSION = re.compile(r"^(?P<alias>.+)-v(?P<number>\d+)\Z")
# "arm": an A/B experiment serves it (adapters/experiments.py) besides the live version.
SERVING_STATES = ("live", "canary", "arm")


class UnknownAdapter(AdapterError):
    """No alias or version by that name."""


@dataclass(frozen=True)
class ValidationLimits:
    base_model_dir: Path | None
    max_rank: int
    max_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class Published:
    version: AdapterVersion
    created: bool


@dataclass(frozen=True)
class Arm:
    """One side of an A/B experiment: a version (None: the base model) and its retrieval."""

    name: str
    version: str | None
    # None: the alias's own retrieval; False: none; {"collection": ...}: that collection
    retrieval: bool | dict[str, Any] | None = None


@dataclass(frozen=True)
class ExperimentRoute:
    id: int
    arms: tuple[Arm, ...]


@dataclass(frozen=True)
class AliasRoute:
    """How one alias is served right now."""

    alias: str
    live: str | None
    canary: str | None = None
    weight: float = 0.0  # the canary's share of traffic, 0..1
    step: int = 0
    experiment: ExperimentRoute | None = None  # splits all traffic evenly when set


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias) or _VERSION.match(alias):
        raise InvalidAdapter(
            f"invalid alias {alias!r}: 1-48 lowercase letters, digits, '.', '_' or '-', and "
            "not ending in -v<number>"
        )
    return alias


def version_alias(name: str) -> str | None:
    match = _VERSION.match(name)
    return match.group("alias") if match else None


class Registry:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store_dir: Path,
        limits: ValidationLimits,
    ) -> None:
        self.sessions = sessions
        self.store_dir = store_dir
        self.limits = limits
        self._listeners: list[Any] = []

    def on_change(self, callback: Any) -> None:
        """Call ``callback()`` after every change (the reconciler and router listen)."""
        self._listeners.append(callback)

    def changed(self) -> None:
        for callback in self._listeners:
            callback()

    # -- publishing ------------------------------------------------------------------
    async def publish(
        self,
        source: Path,
        alias: str,
        *,
        parent: str | None = None,
        eval_report: dict[str, Any] | None = None,
        state: str | None = None,
    ) -> Published:
        """``state`` forces the new version's state (``candidate`` or ``rejected``)."""
        check_alias(alias)
        info = await anyio.to_thread.run_sync(
            lambda: validate_adapter(
                source,
                base_model_dir=self.limits.base_model_dir,
                max_rank=self.limits.max_rank,
                max_bytes=self.limits.max_bytes,
            )
        )
        digest = await anyio.to_thread.run_sync(content_sha256, source)
        existing = await self._by_sha(alias, digest)
        if existing is not None:
            return Published(existing, created=False)
        # The slow copy first, outside the lock; its name and row are decided under it.
        staging = await anyio.to_thread.run_sync(self._stage, source, alias)
        try:
            published = await self._record(alias, staging, parent, digest, info, eval_report,
                                           state)  # fmt: skip
        finally:
            await anyio.to_thread.run_sync(_remove_tree, staging)  # gone if it was renamed
        if published.created:
            version = published.version
            log.info("adapter published", extra={"version": version.name, "state": version.state})
            self.changed()
        return published

    def _stage(self, source: Path, alias: str) -> Path:
        """Copy to a temp dir beside the versions and fsync: renamed whole, or removed."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        staging = self.store_dir / f".{alias}.tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            for file_name in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copyfile(source / file_name, staging / file_name)
                with (staging / file_name).open("rb") as handle:
                    os.fsync(handle.fileno())
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    async def _record(
        self,
        alias: str,
        staging: Path,
        parent: str | None,
        digest: str,
        info: Any,
        eval_report: dict[str, Any] | None,
        state: str | None,
    ) -> Published:
        """Name, rename and record the staged copy, unless the same content was published
        meanwhile. All under the alias's lock: of two publishers of one content only one
        records it, of two first versions only one goes live, and no two take one number."""
        target: Path | None = None
        try:
            async with self.sessions() as session, session.begin():
                alias_row = await lock_alias(session, alias, create=True)
                assert alias_row is not None  # created just now if it was missing
                twin = await session.scalar(
                    select(AdapterVersion).where(
                        AdapterVersion.alias == alias, AdapterVersion.sha256 == digest
                    )
                )
                if twin is not None:
                    return Published(twin, created=False)
                number = await self._next_number(session, alias)
                target = self.store_dir / f"{alias}-v{number}"
                await anyio.to_thread.run_sync(os.rename, staging, target)
                first = alias_row.live_version is None and state is None
                version = AdapterVersion(
                    name=target.name, alias=alias, number=number,
                    parent=parent or alias_row.live_version, sha256=digest, rank=info.rank,
                    target_modules=list(info.target_modules), base_model=info.base_model,
                    path=str(target), size_bytes=info.size_bytes,
                    state=state or ("live" if first else "candidate"), eval_report=eval_report,
                )  # fmt: skip
                session.add(version)
                if first:
                    alias_row.live_version = version.name
                alias_row.generation += 1
                alias_row.updated_at = utcnow()
        except BaseException:
            if target is not None:  # renamed, but the row was not committed: no version
                await anyio.to_thread.run_sync(_remove_tree, target)
            raise
        return Published(version, created=True)

    async def create_alias(self, alias: str) -> bool:
        """Declare an alias with no version yet (it serves the base); False if it exists."""
        check_alias(alias)
        try:
            async with self.sessions() as session, session.begin():
                if await session.get(Alias, alias) is not None:
                    return False
                session.add(Alias(name=alias, live_version=None, generation=0))
        except IntegrityError:
            return False
        self.changed()
        return True

    async def set_eval_report(self, name: str, report: dict[str, Any]) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(AdapterVersion).where(AdapterVersion.name == name).values(eval_report=report)
            )

    async def _by_sha(self, alias: str, digest: str) -> AdapterVersion | None:
        async with self.sessions() as session:
            result: AdapterVersion | None = await session.scalar(
                select(AdapterVersion).where(
                    AdapterVersion.alias == alias, AdapterVersion.sha256 == digest
                )
            )
            return result

    async def _next_number(self, session: AsyncSession, alias: str) -> int:
        """The alias's next version number (called under its lock)."""
        highest = await session.scalar(
            select(func.max(AdapterVersion.number)).where(AdapterVersion.alias == alias)
        )
        number = int(highest or 0) + 1
        # A directory without a row is what a publisher that crashed between its rename and
        # its commit leaves behind: step over it, since names are never reused.
        while await anyio.Path(self.store_dir / f"{alias}-v{number}").exists():
            number += 1
        return number

    # -- reads -----------------------------------------------------------------------
    async def get(self, name: str) -> AdapterVersion:
        async with self.sessions() as session:
            version = await session.get(AdapterVersion, name)
        if version is None:
            raise UnknownAdapter(f"no adapter version {name!r}")
        return version

    async def versions(self, alias: str | None = None) -> list[AdapterVersion]:
        query = select(AdapterVersion).order_by(AdapterVersion.alias, AdapterVersion.number)
        if alias is not None:
            query = query.where(AdapterVersion.alias == alias)
        async with self.sessions() as session:
            return list(await session.scalars(query))

    async def serving_versions(self) -> list[AdapterVersion]:
        """Every version that must be loaded on every engine replica."""
        async with self.sessions() as session:
            return list(
                await session.scalars(
                    select(AdapterVersion).where(AdapterVersion.state.in_(SERVING_STATES))
                )
            )

    async def routes(self) -> dict[str, AliasRoute]:
        async with self.sessions() as session:
            aliases = list(await session.scalars(select(Alias)))
            rollouts = {
                rollout.alias: rollout
                for rollout in await session.scalars(
                    select(Rollout).where(Rollout.state.in_(("running", "paused")))
                )
            }
            experiments = {
                experiment.alias: experiment_route(experiment)
                for experiment in await session.scalars(
                    select(Experiment).where(Experiment.state == "running")
                )
            }
        routes = {}
        for alias in aliases:
            rollout = rollouts.get(alias.name)
            experiment = experiments.get(alias.name)
            if rollout is None:
                routes[alias.name] = AliasRoute(alias.name, alias.live_version,
                                                experiment=experiment)  # fmt: skip
            else:
                routes[alias.name] = AliasRoute(
                    alias.name, alias.live_version, rollout.candidate, rollout.weight, rollout.step
                )
        return routes

    async def set_state(self, name: str, state: str, session: AsyncSession | None = None) -> None:
        async def apply(active: AsyncSession) -> None:
            await active.execute(
                update(AdapterVersion).where(AdapterVersion.name == name).values(state=state)
            )

        if session is not None:
            await apply(session)
            return
        async with self.sessions() as fresh, fresh.begin():
            await apply(fresh)
        self.changed()


def experiment_route(experiment: Experiment) -> ExperimentRoute:
    arms = tuple(Arm(arm["name"], arm["version"], arm.get("retrieval")) for arm in experiment.arms)
    return ExperimentRoute(experiment.id, arms)


def content_sha256(directory: Path) -> str:
    """Hash of the config and weights, so identical uploads map to the same version."""
    digest = hashlib.sha256()
    for file_name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update(file_name.encode() + b"\0")
        with (directory / file_name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

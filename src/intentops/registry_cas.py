"""Compare-and-set for `@champion` on top of MLflow's registry, which has none of its own.

MLflow's `set_registered_model_alias` is an unconditional upsert (the SQL store merges the alias row; the REST call
takes no expected value). So every IntentOps champion move claims itself in a registered-model tag and re-reads alias
and claim right before and right after writing the alias. docs/safety.md ("Concurrent registry writers") says what
this does and does not guarantee.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from intentops.registry_packaging import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHAMPION_CLAIM_TAG = "intentops.champion_claim"


class ChampionMovedError(RegistryError):
    """`@champion` is not (or no longer) what the caller expected: another promotion moved it."""


def is_missing(exc: Exception) -> bool:
    """True for MLflow's "no such registered model / version" error."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def describe_champion(version: str | None) -> str:
    """How a champion reads in a message: "version 3" or "no champion"."""
    return f"version {version}" if version else "no champion"


def champion_and_claim(client: MlflowClient, name: str) -> tuple[str | None, str]:
    """(the version behind @champion or None, the last champion claim) in one read."""
    try:
        registered = client.get_registered_model(name)
    except Exception as exc:
        if is_missing(exc):
            return None, ""
        raise
    version = registered.aliases.get(CHAMPION)
    return (str(version) if version is not None else None), str((registered.tags or {}).get(CHAMPION_CLAIM_TAG, ""))


def moved_error(name: str, now: str | None, expected: str | None, what: str) -> ChampionMovedError:
    """The error for a champion that is not the one the caller expected."""
    return ChampionMovedError(
        f"{name}@champion is {describe_champion(now)}, not the expected {describe_champion(expected)}: {what}; "
        "check `intentops champion` and promote again with --expect-champion if this version should still win"
    )


def compare_and_move(client: MlflowClient, name: str, version: str, expected: str | None) -> bool:
    """Move @champion from `expected` to `version` unless someone else moves it meanwhile.

    MLflow's alias write is an unconditional upsert, so the check is ours: a claim tag names this move, and alias and
    claim are re-read right before and right after the write. Of several movers that start from the same champion,
    at most one returns; the others raise `ChampionMovedError` (an unlucky pair may both raise). False when
    `version` already was the champion.
    """
    claim = f"{uuid.uuid4().hex}:{version}"
    upsert(client.set_registered_model_tag, name, CHAMPION_CLAIM_TAG, claim)
    before, claimed = champion_and_claim(client, name)
    if before == version:
        return False
    if before != expected:
        raise moved_error(name, before, expected, "another promotion moved it first (nothing changed)")
    if claimed != claim and not claimed.endswith(f":{version}"):
        raise moved_error(name, before, expected, "another promotion is moving it right now (nothing changed)")
    upsert(client.set_registered_model_alias, name, CHAMPION, version)
    after, claimed = champion_and_claim(client, name)
    if after != version or not (claimed == claim or claimed.endswith(f":{version}")):
        raise ChampionMovedError(
            f"{name}@champion is now {describe_champion(after)} although this call moved it to version {version}: another "
            "promotion ran at the same time; check `intentops champion` before trying again"
        )
    return True


# How SQLite, PostgreSQL and MySQL word a lost insert race; MLflow's SQL store passes it on as BAD_REQUEST.
_LOST_INSERT_RACE = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry")


def lost_insert_race(exc: Exception) -> bool:
    """True when another writer inserted the same new tag or alias row first."""
    from mlflow.exceptions import MlflowException

    return (
        isinstance(exc, MlflowException)
        and exc.error_code == "BAD_REQUEST"
        and any(marker in str(exc) for marker in _LOST_INSERT_RACE)
    )


def upsert(write: Callable[..., object], *args: object) -> None:
    """One of the client's tag or alias writes, repeated once if it lost an insert race.

    MLflow's SQL store upserts with select-then-insert, so two writers of the same new row collide and one gets a
    unique-constraint error; the repeat finds the row and updates it, as a sequential write would have.
    """
    try:
        write(*args)
    except Exception as exc:
        if not lost_insert_race(exc):
            raise
        write(*args)

"""The model registry: the analysis registers each group's best model and points aliases at the best ones.

One registered model per experiment (``tracking.registered_model_name``: the experiment's own name), because an
experiment is one comparison; a smoke or test experiment's models never compete with the real ones. Each group's
evaluated best run becomes a version of it (once: a version of the same run and model is reused, so re-running
an analysis adds nothing), tagged with what its evaluation found. Then the aliases: ``@champion`` for the overall
best, ``best-<framework>`` for each framework's (``tracking.ALIAS_CHAMPION``, ``tracking.best_alias``), so that
``models:/thread-density@champion`` loads the best thread-density model.

The criterion is the one the analysis selects runs by: the lowest ``best_val_loss``. The test scores are recorded,
never used to choose: choosing on the test split would leak it into model selection, and it would no longer
measure anything. Validation losses compare only on one dataset, so a candidate is compared with an alias's
current holder only when the holder was trained on this analysis' dataset (its recorded digest); otherwise the
alias stays, and says why, unless ``promote`` moves it anyway. An alias moves only to a strictly better version.

A store that refuses registration (no model registry) costs the analysis nothing but one warning line:
:func:`try_register_best` catches MLflow's errors, and only those.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from analysis.evaluate import Evaluation
from thread_bench import tracking

log = logging.getLogger(__name__)

#: What became of an alias: set for the first time, moved to a better version (``replaced``) or, with
#: ``promote``, over a holder whose loss does not compare (``promoted``); or kept, because its holder is the best
#: candidate itself (``current``), is not worse (``not_better``), or cannot be compared (``incomparable``).
Outcome = Literal["set", "replaced", "promoted", "current", "not_better", "incomparable"]
#: The outcomes that point the alias at the candidate.
_MOVES = frozenset({"set", "replaced", "promoted"})

#: Hex digits of a dataset digest shown in a line (as the analysis' other messages do).
_DIGEST_CHARS = 16


def _text(value: Any) -> str:
    """A tag value: ``""`` for a missing one (None, NaN), else the value as text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


@dataclass(frozen=True)
class Candidate:
    """A group's best run as evaluated by this analysis: the model to register and what its version records."""

    group: str
    framework: str
    backend: str
    seed: str
    source_run_id: str
    #: The run's logged model (``evaluate.model_uri``): ``models:/<model_id>``, or ``runs:/<id>/model``.
    model_uri: str
    evaluation_run_id: str
    dataset_digest: str
    best_val_loss: float
    #: ``test_loss`` and the workload's test metrics, by MLflow key: recorded, never used to choose.
    test_scores: Mapping[str, float]

    @classmethod
    def of(
        cls, source: Mapping[str, Any], evaluation: Evaluation, *, model_uri: str, evaluation_run_id: str
    ) -> Candidate:
        """The candidate of ``source`` (a row of ``runs.best_per_group``) and its evaluation."""
        return cls(
            group=str(source["group"]),
            framework=str(source["framework"]),
            backend=_text(source.get("backend")),
            seed=_text(source["seed"]),
            source_run_id=str(source["run_id"]),
            model_uri=model_uri,
            evaluation_run_id=evaluation_run_id,
            dataset_digest=str(source["dataset_digest"]),
            best_val_loss=float(source[tracking.BEST_VAL_LOSS]),
            test_scores={tracking.TEST_LOSS: evaluation.test_loss, **evaluation.scores},
        )

    def version_tags(self) -> dict[str, str]:
        """The tags of its version: the evaluation run's params and metrics under their own names (floats in full,
        as ``repr`` writes them), and the evaluation run."""
        return {
            tracking.PARAM_FRAMEWORK: self.framework,
            tracking.PARAM_BACKEND: self.backend,
            tracking.PARAM_GROUP: self.group,
            tracking.PARAM_SEED: self.seed,
            tracking.PARAM_SOURCE_RUN_ID: self.source_run_id,
            tracking.VERSION_TAG_EVALUATION_RUN_ID: self.evaluation_run_id,
            tracking.PARAM_DATASET_DIGEST: self.dataset_digest,
            tracking.BEST_VAL_LOSS: repr(self.best_val_loss),
            **{key: repr(float(value)) for key, value in self.test_scores.items()},
        }


@dataclass(frozen=True)
class Version:
    """A registered version as the aliases are decided on: its number and what its tags record (``None`` or NaN
    where they record nothing: a version registered by hand)."""

    number: str
    group: str | None = None
    seed: str | None = None
    best_val_loss: float = math.nan
    dataset_digest: str | None = None

    @classmethod
    def of(cls, candidate: Candidate, number: str) -> Version:
        return cls(number, candidate.group, candidate.seed, candidate.best_val_loss, candidate.dataset_digest)

    @classmethod
    def read(cls, version: ModelVersion) -> Version:
        """What ``version``'s tags record."""
        tags = version.tags or {}
        try:
            loss = float(tags.get(tracking.BEST_VAL_LOSS, "nan"))
        except ValueError:
            loss = math.nan
        return cls(
            number=str(version.version),
            group=tags.get(tracking.PARAM_GROUP) or tags.get(tracking.PARAM_FRAMEWORK),
            seed=tags.get(tracking.PARAM_SEED),
            best_val_loss=loss,
            dataset_digest=tags.get(tracking.PARAM_DATASET_DIGEST) or None,
        )

    def describe(self) -> str:
        """``version 3 (torch, seed 2, best_val_loss 0.0291)``; what is not recorded is left out."""
        parts = [self.group or "", f"seed {self.seed}" if self.seed else ""]
        parts.append(f"{tracking.BEST_VAL_LOSS} {self.best_val_loss:.4g}" if math.isfinite(self.best_val_loss) else "")
        shown = ", ".join(part for part in parts if part)
        return f"version {self.number} ({shown})" if shown else f"version {self.number} (no records)"


@dataclass(frozen=True)
class AliasDecision:
    """What became of one alias, and the line that says so."""

    alias: str
    #: This analysis' best candidate for the alias (its version).
    candidate: Version
    #: The version the alias pointed to before, if any.
    holder: Version | None
    outcome: Outcome
    #: Why the holder's loss does not compare (``incomparable``, ``promoted``); empty otherwise.
    why: str = ""

    @property
    def moved(self) -> bool:
        return self.outcome in _MOVES

    @property
    def after(self) -> Version:
        """The version the alias points to now."""
        if self.moved or self.holder is None:
            return self.candidate
        return self.holder

    @property
    def line(self) -> str:
        """One line: ``@champion: version 3 (…) replaces version 1 (…)``, ``@champion: kept version 3 (…); …``."""
        candidate, head = self.candidate.describe(), f"@{self.alias}:"
        if self.holder is None:
            return f"{head} set to {candidate}"
        holder = self.holder.describe()
        if self.outcome == "replaced":
            return f"{head} {candidate} replaces {holder}"
        if self.outcome == "promoted":
            return f"{head} {candidate} replaces {holder} (--promote: {self.why})"
        if self.outcome == "current":
            return f"{head} kept {holder}; it is still the best candidate"
        if self.outcome == "not_better":
            return f"{head} kept {holder}; best candidate {candidate} is not better"
        return (
            f"{head} kept {holder}; best candidate {candidate} not compared: {self.why}, and validation losses "
            "compare only on one dataset (--promote moves the alias anyway)"
        )


def decide(alias: str, candidate: Version, holder: Version | None, *, digest: str, promote: bool) -> AliasDecision:
    """Whether ``alias`` moves from ``holder`` to ``candidate``, the best version of an analysis of the dataset
    ``digest``: when there is no holder; when the holder's loss compares (same dataset) and the candidate's is
    strictly lower; and, with ``promote``, when it does not compare."""
    if holder is None:
        return AliasDecision(alias, candidate, None, "set")
    if holder.number == candidate.number:
        return AliasDecision(alias, candidate, holder, "current")
    why = _incomparable(holder, digest)
    if why:
        return AliasDecision(alias, candidate, holder, "promoted" if promote else "incomparable", why)
    better = candidate.best_val_loss < holder.best_val_loss
    return AliasDecision(alias, candidate, holder, "replaced" if better else "not_better")


def _incomparable(holder: Version, digest: str) -> str:
    """Why the holder's validation loss cannot be compared with this analysis' (empty when it can)."""
    if holder.dataset_digest is None:
        return "the holder records no dataset digest"
    if holder.dataset_digest != digest:
        return (
            f"the holder was trained on another dataset, digest {holder.dataset_digest[:_DIGEST_CHARS]}… against "
            f"this analysis' {digest[:_DIGEST_CHARS]}…"
        )
    if not math.isfinite(holder.best_val_loss):
        return f"the holder records no {tracking.BEST_VAL_LOSS}"
    return ""


@dataclass(frozen=True)
class Registration:
    """What an analysis registered: the registered model, each group's version and each alias' decision; or, when
    the store refused, why (``error``)."""

    name: str
    #: group -> its version.
    versions: Mapping[str, Version]
    decisions: tuple[AliasDecision, ...]
    error: str | None = None

    @property
    def champion(self) -> Version | None:
        """The version ``@champion`` points to after this analysis (None when nothing was registered)."""
        return next((d.after for d in self.decisions if d.alias == tracking.ALIAS_CHAMPION), None)

    @property
    def champion_uri(self) -> str:
        return tracking.alias_uri(self.name, tracking.ALIAS_CHAMPION)

    def lines(self) -> list[str]:
        """One line per alias (none when the store refused: :func:`try_register_best` has warned)."""
        return [decision.line for decision in self.decisions]

    def summary(self) -> str:
        """The champion, for the report's scope: ``models:/thread-density@champion = version 3 (…)``."""
        champion = self.champion
        if champion is None:
            return f"not registered ({self.error})" if self.error else "not registered"
        return f"{self.champion_uri} = {champion.describe()}"

    def run_tags(self) -> dict[str, str]:
        """The analysis run's record of it (none when nothing was registered)."""
        champion = self.champion
        if champion is None:
            return {}
        return {
            tracking.TAG_REGISTERED_MODEL: self.name,
            tracking.TAG_CHAMPION_VERSION: champion.number,
            tracking.TAG_CHAMPION_URI: self.champion_uri,
        }


def register_best(candidates: Sequence[Candidate], *, experiment: str, promote: bool = False) -> Registration:
    """Register each candidate's model as a version of the experiment's registered model (reusing a version of
    the same run and model), then decide every alias (:func:`decide`): ``@champion`` over all candidates,
    ``best-<framework>`` over each framework's.

    Raises:
        ValueError: no candidates, two of one group, or candidates of different datasets (the analysis never makes
            those: one best run per group, one dataset).
        MlflowException: the store refused (no model registry, no access).
    """
    if not candidates:
        raise ValueError("no candidates to register")
    groups = [candidate.group for candidate in candidates]
    if len(set(groups)) != len(groups):
        raise ValueError(f"one candidate per group, got groups {groups}")
    digests = {candidate.dataset_digest for candidate in candidates}
    if len(digests) != 1:
        raise ValueError(f"candidates of {len(digests)} datasets: their validation losses do not compare")
    (digest,) = digests
    name = tracking.registered_model_name(experiment)
    client = MlflowClient()
    versions = {candidate.group: _ensure_version(client, name, candidate) for candidate in candidates}
    registered = client.get_registered_model(name)
    if not registered.description:
        client.update_registered_model(name, description=_description(experiment))
    holders = {alias: str(number) for alias, number in (registered.aliases or {}).items()}
    decisions = []
    for alias, pool in _alias_pools(candidates):
        best = min(pool, key=lambda candidate: (candidate.best_val_loss, candidate.group))
        number = holders.get(alias)
        holder = Version.read(client.get_model_version(name, number)) if number else None
        decision = decide(alias, versions[best.group], holder, digest=digest, promote=promote)
        if decision.moved:
            client.set_registered_model_alias(name, alias, decision.candidate.number)
        decisions.append(decision)
    return Registration(name, versions, tuple(decisions))


def try_register_best(candidates: Sequence[Candidate], *, experiment: str, promote: bool = False) -> Registration:
    """:func:`register_best`, but a store that refuses (MLflow's errors only: a programming error still stops
    the analysis) is one warning line, and a :class:`Registration` with its ``error``."""
    try:
        return register_best(candidates, experiment=experiment, promote=promote)
    except MlflowException as error:
        message = " ".join(str(error).split())[:500]
        log.warning("models not registered in %s: %s", mlflow.get_registry_uri(), message)
        return Registration(tracking.registered_model_name(experiment), {}, (), error=message)


def _alias_pools(candidates: Sequence[Candidate]) -> Iterable[tuple[str, list[Candidate]]]:
    """Each alias and the candidates it chooses from: ``@champion`` all of them, then ``best-<framework>``
    (by framework name) that framework's."""
    yield tracking.ALIAS_CHAMPION, list(candidates)
    for framework in sorted({candidate.framework for candidate in candidates}):
        yield tracking.best_alias(framework), [c for c in candidates if c.framework == framework]


def _ensure_version(client: MlflowClient, name: str, candidate: Candidate) -> Version:
    """The version of ``name`` that holds the candidate's model: an existing one (its missing tags added, none
    changed: a re-run changes nothing), else a new one."""
    existing = _find_version(client, name, candidate)
    if existing is None:
        created = mlflow.register_model(candidate.model_uri, name, tags=candidate.version_tags())
        log.info("%s (seed %s): registered as version %s of %s", candidate.group, candidate.seed, created.version, name)
        return Version.of(candidate, str(created.version))
    recorded = existing.tags or {}
    for key, value in candidate.version_tags().items():
        if key not in recorded:
            client.set_model_version_tag(name, str(existing.version), key, value)
    log.info("%s (seed %s): already version %s of %s", candidate.group, candidate.seed, existing.version, name)
    return Version.of(candidate, str(existing.version))


def _find_version(client: MlflowClient, name: str, candidate: Candidate) -> ModelVersion | None:
    """A version of ``name`` made from the candidate's run and model (the oldest, should there be several).

    The store keeps a version's source as given, so a ``models:/<model_id>`` URI is matched as is; a ``runs:/``
    URI (older stores) is stored resolved to the run's artifact location, and there the run tells: a training
    run logs one model (``evaluate.model_uri`` refuses a run with several)."""
    query = f"name = {tracking.quote(name)} and run_id = {tracking.quote(candidate.source_run_id)}"
    found: list[ModelVersion] = tracking.all_pages(lambda token: client.search_model_versions(query, page_token=token))
    by_run = not candidate.model_uri.startswith("models:/")
    same = [version for version in found if by_run or version.source == candidate.model_uri]
    return min(same, key=lambda version: int(version.version), default=None)


def _description(experiment: str) -> str:
    return (
        f"The best models of experiment {experiment!r}, registered by its analyses (python -m analysis): a version "
        f"per group's best run, tagged with its evaluation. @{tracking.ALIAS_CHAMPION} is the lowest "
        f"{tracking.BEST_VAL_LOSS} of all, {tracking.ALIAS_BEST_TEMPLATE.format(framework='<framework>')} each "
        "framework's; test scores are recorded, never used to choose."
    )

"""Runs a dataset against configurations through the running services, as any client does: each item
becomes a `FusionRequest` on `fusion.requests` and its `FusedResult` is read back, so what is measured
is what users get. Answers and grader replies are kept in the run's store as they arrive; a rerun
asks only for what is missing. Grader models (rubric and pairwise sets) are asked the same way, each as
a model alone at temperature 0."""

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, ModelSpec, Policy
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fusion.catalog import Catalog
from fusion.client import FusionClient
from fusion.evaluation import grading
from fusion.evaluation.configs import EvalConfig
from fusion.evaluation.datasets import Dataset, Item, prompt_for
from fusion.evaluation.report import Scored
from fusion.evaluation.store import Answer, Grade, Store, grade_key
from fusion.settings import Settings

log = structlog.get_logger(__name__)

RESULT_MARGIN_S = 30.0
"""How long past a request's deadline the run waits for its result before it counts it as missing."""
GRADER_DEADLINE_S = 300.0
GRADED_ANSWER_CHARS = 4000
"""What the cost estimate assumes a graded answer adds to the grader's prompt (it is not known yet)."""


@dataclass(frozen=True)
class Grader:
    """The model that grades rubric and pairwise sets, alone at temperature 0, and how many times it
    grades each answer (a rubric criterion is met when most repeats say so)."""

    model: str
    repeats: int = 1
    max_tokens: int | None = None

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(model=self.model, temperature=0.0, max_tokens=self.max_tokens)

    @property
    def digest(self) -> str:
        return f"{self.model}@0/{self.max_tokens}"


class MissingResult(Exception):
    """No result came for a request within its deadline and the margin (nothing is stored for it)."""


class Evaluation:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        dataset: Dataset,
        configs: list[EvalConfig],
        store: Store,
        *,
        concurrency: int = 4,
        grader: Grader | None = None,
        baseline: str | None = None,
        console: Console | None = None,
    ) -> None:
        if dataset.format in ("rubric", "pairwise") and grader is None:
            raise ValueError(f"a {dataset.format} set needs a grader model (--grader)")
        if dataset.format == "pairwise" and len(configs) < 2:
            raise ValueError("a pairwise set compares configurations with a baseline: give at least two")
        self._settings = settings
        self._catalog = catalog
        self.dataset = dataset
        self.configs = configs
        self._store = store
        self._limit = asyncio.Semaphore(concurrency)
        self.grader = grader
        self.baseline = baseline or (configs[0].name if dataset.format == "pairwise" else None)
        self._console = console or Console(stderr=True)
        self.calls = 0
        """Requests this run sent (answers and grader calls): 0 when everything was in the store."""
        self.grader_cost_usd = Decimal(0)
        """What the grader's replies cost, those from the store included."""

    # -- what is left, and what it may cost

    def pending(self) -> list[tuple[Item, EvalConfig]]:
        return [
            (item, config)
            for item in self.dataset.items
            for config in self.configs
            if self._store.answer(self.dataset.name, item.id, config.digest()) is None
        ]

    def estimate_usd(self) -> Decimal:
        """The upper-leaning cost of what is left: the answers not stored, and every grader call (as
        if none were cached, since the answers they grade are not known yet)."""
        total = sum(
            (
                config.estimate_usd(prompt_for(item, self.dataset.format), self._catalog)
                for item, config in self.pending()
            ),
            Decimal(0),
        )
        if self.grader is None:
            return total
        grader = EvalConfig(name="grader", model=self.grader.spec)
        calls_per_item = self.grader.repeats * (
            len(self.configs) if self.dataset.format == "rubric" else 2 * (len(self.configs) - 1)
        )
        for item in self.dataset.items:
            prompt = item.question + "\n" + "\n".join(c.text for s in item.sections for c in s.criteria)
            total += calls_per_item * grader.estimate_usd(prompt + " " * GRADED_ANSWER_CHARS, self._catalog)
        return total

    # -- the run

    async def run(self, show_progress: bool = True) -> list[Scored]:
        work = self.pending()
        async with FusionClient(self._settings) as client:
            with self._progress(show_progress) as progress:
                task = progress.add_task(
                    "answers", total=len(self.dataset.items) * len(self.configs), status=""
                )
                progress.update(task, completed=len(self.dataset.items) * len(self.configs) - len(work))
                missing = await self._gather(client, work, progress, task)
                scored = await self._score(client, progress)
        if missing:
            self._console.print(f"[yellow]{missing} answers had no result in time; run again to retry them")
        return scored

    @contextlib.contextmanager
    def _progress(self, show: bool) -> Iterator[Progress]:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self._console,
            disable=not show,
        )
        with progress:
            yield progress

    async def _gather(
        self, client: FusionClient, work: list[tuple[Item, EvalConfig]], progress: Progress, task: Any
    ) -> int:
        failed = missing = 0

        async def one(item: Item, config: EvalConfig) -> None:
            nonlocal failed, missing
            async with self._limit:
                request = config.request(prompt_for(item, self.dataset.format), _request_id("eval"))
                try:
                    result = await self._ask(client, request)
                except MissingResult:
                    missing += 1
                else:
                    answer = _answer_of(result)
                    self._store.put_answer(self.dataset.name, item.id, config.digest(), config.name, answer)
                    failed += answer.answer is None
            progress.update(task, advance=1, status=f"no answer {failed} · no result {missing}")

        progress.update(task, status="")
        await asyncio.gather(*(one(item, config) for item, config in work))
        return missing

    async def _ask(self, client: FusionClient, request: FusionRequest) -> FusedResult:
        self.calls += 1
        try:
            return await client.fuse(request, timeout_s=request.policy.deadline_s + RESULT_MARGIN_S)
        except (TimeoutError, KafkaError) as error:
            log.warning("no result", request_id=request.request_id, error=repr(error))
            raise MissingResult(request.request_id) from error

    # -- grading

    async def _score(self, client: FusionClient, progress: Progress) -> list[Scored]:
        stored = {
            (item.id, config.name): answer
            for item in self.dataset.items
            for config in self.configs
            if (answer := self._store.answer(self.dataset.name, item.id, config.digest())) is not None
        }
        if self.dataset.format in ("short", "choice"):
            return [
                self._rule_scored(item, config, answer)
                for item in self.dataset.items
                for config in self.configs
                if (answer := stored.get((item.id, config.name))) is not None
            ]
        task = progress.add_task("grading", total=len(stored), status="")
        graded = await asyncio.gather(
            *(
                self._graded(client, item, config, answer, stored, progress, task)
                for item in self.dataset.items
                for config in self.configs
                if (answer := stored.get((item.id, config.name))) is not None
            )
        )
        return [row for row in graded if row is not None]

    def _rule_scored(self, item: Item, config: EvalConfig, answer: Answer) -> Scored:
        grade = grading.grade_short if self.dataset.format == "short" else grading.grade_choice
        score = grade(answer.answer, item) if answer.answer is not None else 0.0
        return _scored(item, config, answer, score)

    async def _graded(  # noqa: PLR0917
        self,
        client: FusionClient,
        item: Item,
        config: EvalConfig,
        answer: Answer,
        stored: dict[tuple[str, str], Answer],
        progress: Progress,
        task: Any,
    ) -> Scored | None:
        try:
            if answer.answer is None:
                return _scored(item, config, answer, 0.0)
            if self.dataset.format == "rubric":
                met = await self._rubric(client, item, answer.answer)
                return _scored(
                    item,
                    config,
                    answer,
                    grading.draco_score(item, met),
                    sections=grading.section_scores(item, met),
                )
            baseline = stored.get((item.id, self.baseline or ""))
            if config.name == self.baseline:
                return _scored(item, config, answer, 0.5, outcome="baseline")
            if baseline is None or baseline.answer is None:
                return None  # nothing to compare with: the item is left out of this pair
            score = await self._pairwise(client, item, answer.answer, baseline.answer)
            outcome = "win" if score > 0.5 else "loss" if score < 0.5 else "tie"
            return _scored(item, config, answer, score, outcome=outcome)
        except (grading.GradingError, MissingResult) as error:
            return _scored(item, config, answer, 0.0, error=f"grading: {error}"[:300])
        finally:
            progress.update(task, advance=1)

    async def _rubric(self, client: FusionClient, item: Item, response: str) -> dict[str, bool]:
        messages = grading.rubric_messages(item, response)
        verdicts = [
            grading.parse_rubric(await self._grade(client, messages, r), item) for r in self._repeats()
        ]
        # a criterion is met when most repeats say so (ties: not met)
        return {cid: sum(v[cid] for v in verdicts) * 2 > len(verdicts) for cid in verdicts[0]}

    async def _pairwise(self, client: FusionClient, item: Item, candidate: str, baseline: str) -> float:
        scores = []
        for repeat in self._repeats():
            first = grading.parse_pairwise(
                await self._grade(
                    client, grading.pairwise_messages(item.question, candidate, baseline), repeat
                )
            )
            second = grading.parse_pairwise(
                await self._grade(
                    client, grading.pairwise_messages(item.question, baseline, candidate), repeat
                )
            )
            scores.append(grading.pairwise_score(first, second))
        return sum(scores) / len(scores)

    def _repeats(self) -> range:
        return range(self.grader.repeats if self.grader else 1)

    async def _grade(self, client: FusionClient, messages: list[dict[str, str]], repeat: int) -> str:
        """The grader's reply, from the store when it was asked this before."""
        assert self.grader is not None
        key = grade_key(self.grader.digest, messages, repeat)
        if (cached := self._store.grade(key)) is not None:
            self.grader_cost_usd += cached.cost_usd
            return cached.reply
        request = FusionRequest(
            request_id=_request_id("grade"),
            messages=[ChatMessage.model_validate(message) for message in messages],
            panel=[self.grader.spec.model_copy(update={"seed": repeat or None})],
            policy=Policy(deadline_s=GRADER_DEADLINE_S),
        )
        async with self._limit:
            result = await self._ask(client, request)
        if result.answer is None:
            raise grading.GradingError(f"the grader gave no answer: {result.error or result.status}")
        self._store.put_grade(key, self.grader.model, Grade(result.answer, result.cost.total_usd))
        self.grader_cost_usd += result.cost.total_usd
        return result.answer


def _request_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def _answer_of(result: FusedResult) -> Answer:
    judge_tokens = result.judge.usage.total_tokens if result.judge is not None else 0
    return Answer(
        request_id=result.request_id,
        status=result.status,
        answer=result.answer,
        answer_source=result.answer_source,
        error=result.error if result.answer is None else None,
        cost_usd=result.cost.total_usd,
        latency_ms=result.timings.total_ms,
        input_tokens=result.usage.total.input_tokens,
        output_tokens=result.usage.total.output_tokens,
        judge_tokens=judge_tokens,
    )


def _scored(
    item: Item,
    config: EvalConfig,
    answer: Answer,
    score: float,
    *,
    error: str | None = None,
    sections: dict[str, float] | None = None,
    outcome: str | None = None,
) -> Scored:
    if answer.answer is None:
        error = f"{answer.status}: {answer.error or 'no answer'}"[:300]
    return Scored(
        item_id=item.id,
        domain=item.domain,
        config=config.name,
        score=score,
        error=error,
        cost_usd=answer.cost_usd,
        latency_ms=answer.latency_ms,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        judge_tokens=answer.judge_tokens,
        sections=sections or {},
        outcome=outcome,
    )

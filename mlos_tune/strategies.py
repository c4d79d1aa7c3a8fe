"""Which configuration to try next: ``grid`` (every combination, in order), ``random`` and
``optuna`` (Optuna's RandomSampler and its TPE sampler with the SLOs as constraints).

A strategy is asked for a configuration and told how it went: its objective value (None when it
failed) and its SLO violation (0 when feasible). Optuna is an optional extra
(``pip install 'mlos-py[tune]'``; ``make setup`` installs it); only the non-grid strategies need it.
"""
from __future__ import annotations

from .errors import TuneError
from .space import SearchSpace, key

STRATEGIES = ("auto", "grid", "random", "optuna")
AUTO_GRID_MAX = 16        # auto: the whole grid up to this many configurations, Optuna's TPE beyond


def optuna_available() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


class Grid:
    name = "grid"

    def __init__(self, space: SearchSpace):
        self._configs = space.grid()
        self._tried: set[str] = set()

    def __len__(self) -> int:
        return len(self._configs)

    def ask(self) -> dict | None:
        for c in self._configs:
            if key(c) not in self._tried:
                self._tried.add(key(c))
                return c
        return None

    def tell(self, config: dict, value: float | None, violation: float) -> None:
        self._tried.add(key(config))


class OptunaSearch:
    """Optuna's ask-and-tell interface over the space; a failed configuration is a FAIL trial, an
    infeasible one carries its violation as a constraint (TPE then prefers feasible regions)."""

    def __init__(self, space: SearchSpace, sampler: str, higher_is_better: bool, seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name = sampler
        self._optuna = optuna
        self.distributions = {}
        for name, p in space.params.items():
            if p.values is not None:
                self.distributions[name] = optuna.distributions.CategoricalDistribution(list(p.values))
            else:
                self.distributions[name] = optuna.distributions.IntDistribution(p.low, p.high, step=p.step or 1,
                                                                                log=p.log)
        if sampler == "random":
            s = optuna.samplers.RandomSampler(seed=seed)
        else:
            s = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
        self.study = optuna.create_study(direction="maximize" if higher_is_better else "minimize", sampler=s)
        self._open: dict[str, list] = {}

    def ask(self) -> dict | None:
        trial = self.study.ask(self.distributions)
        config = {n: trial.params[n] for n in self.distributions}
        self._open.setdefault(key(config), []).append(trial)
        return config

    def tell(self, config: dict, value: float | None, violation: float) -> None:
        t = self._optuna.trial
        waiting = self._open.get(key(config)) or []
        trial = waiting.pop(0) if waiting else None
        if trial is None:     # resumed: a configuration measured before this process started
            if not all(n in config for n in self.distributions):
                return
            try:
                params = {n: config[n] for n in self.distributions}
                frozen = t.create_trial(params=params, distributions=self.distributions, value=value,
                                        state=t.TrialState.COMPLETE if value is not None else t.TrialState.FAIL,
                                        constraints={"slo": violation} if value is not None else None)
            except ValueError:
                return        # outside the space as it is now (the space file changed)
            self.study.add_trial(frozen)
            return
        if value is None:
            self.study.tell(trial, state=t.TrialState.FAIL)
        else:
            trial.set_constraint("slo", violation)
            self.study.tell(trial, value)


def make_strategy(name: str, space: SearchSpace, higher_is_better: bool, seed: int):
    if name not in STRATEGIES:
        raise TuneError(f"--strategy {name}: one of {', '.join(STRATEGIES)}")
    size = space.grid_size()
    if name == "auto":
        name = "grid" if size is not None and (size <= AUTO_GRID_MAX or not optuna_available()) else "optuna"
    if name == "grid":
        if size is None:
            space.grid()          # raises with the parameter that has no grid
        return Grid(space)
    if not optuna_available():
        raise TuneError(f"--strategy {name} needs Optuna: pip install 'mlos-py[tune]' (or optuna); "
                        "--strategy grid needs nothing more")
    return OptunaSearch(space, "random" if name == "random" else "optuna", higher_is_better, seed)

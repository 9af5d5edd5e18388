"""``python -m knapsack_rl.integrations.trl --config FILE.yaml``: the YAML launcher (:mod:`.cli`)."""

from knapsack_rl.integrations.trl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark runner's plan for the Azure store: which trials, at what size, on which hub."""

from __future__ import annotations

from pathlib import Path

from benchmarks.hubs import HubPlace
from benchmarks.run import Availability, parse_args, plan

AZURITE = "azure://devstoreaccount1/{hub}?blob_port=1&queue_port=2&table_port=3"


def test_azure_runs_l_and_w1_to_w4_at_a_tenth_of_their_counts() -> None:
    args = parse_args(["--stores", "sqlite,azure", "--repeat", "1", "--worker-processes", "2"])
    args.azure_url = AZURITE
    found = Availability(
        pairs={("sqlite", "duratask"), ("azure", "duratask")}, limit_stores=["sqlite", "azure"]
    )
    azure = {(t.workload, t.variant): t.params for t in plan(args, found) if t.store == "azure"}
    sqlite = {(t.workload, t.variant): t.params for t in plan(args, found) if t.store == "sqlite"}
    assert {w for w, _ in azure} == {"L", "W1", "W2", "W3", "W4"}
    assert ("W1", "2 procs") not in azure and ("W1", "2 procs") in sqlite
    assert (
        azure[("W1", "in-process")]["orchestrations"] * 10
        == (sqlite[("W1", "in-process")]["orchestrations"])
    )
    assert azure[("W1", "in-process")]["activities"] == sqlite[("W1", "in-process")]["activities"]
    assert azure[("W2", "")]["activities"] * 10 == sqlite[("W2", "")]["activities"]
    assert azure[("W3", "")]["orchestrations"] * 10 == sqlite[("W3", "")]["orchestrations"]
    assert {k: p for k, p in azure.items() if k[0] == "W4"} == {
        k: p for k, p in sqlite.items() if k[0] == "W4"
    }


def test_each_azure_trial_gets_its_own_task_hub_on_the_run_s_azurite(tmp_path: Path) -> None:
    one = HubPlace.new("azure", str(tmp_path), "postgresql://x/y", AZURITE)
    two = HubPlace.new("azure", str(tmp_path), "postgresql://x/y", AZURITE)
    url = one.duratask_url()
    assert url.startswith("azure://devstoreaccount1/bench") and url.endswith("table_port=3")
    hub = url.split("/")[3].split("?")[0]
    assert hub.isalnum() and url != two.duratask_url()
    assert HubPlace.from_json(one.to_json()) == one

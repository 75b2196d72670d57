"""A task hub in an Azure Storage account: tables hold the truth, queues carry hints.

Layout (``{hub}`` is the task hub's name):

- ``{hub}History`` table, one partition per instance (partition key: the instance id):
  a ``sentinel`` row (the instance row: status, execution id, history length, the lease's
  token, owner and expiry, delivery counts of its messages), history rows ``h-HIST-SEQ``,
  inbox message rows ``m-ID``, activity rows ``a-ID``, outbox rows ``o-ID`` (messages to
  other instances or to entities, not delivered yet) and delivery markers ``d-ID``
  (messages received);
- ``{hub}Instances`` table: a copy of each sentinel's instance row for queries, written
  when the instance is created and whenever its status changes (queries re-read the
  sentinel of an unfinished instance, so what they report is exact);
- ``{hub}Workers`` and ``{hub}Schedules`` tables: worker presence and schedules;
- ``{hub}Entities`` table: durable entities, one partition each (see ``_entities``);
- ``{hub}-control-NN`` queues (instances spread by a stable hash of their id) and the
  ``{hub}-workitems`` queue: hints that an instance has a message or that an activity is
  waiting. Hints are never trusted: a worker reads the rows they point at, and a sweep of
  the rows finds whatever a lost hint would have pointed at;
- ``{hub}-largemessages`` blob container: property values over the table limit, gzipped,
  and the staged rows of an episode too large for one table transaction;
- ``{hub}-leases`` blob container: one blob per control partition, whose lease says which
  worker serves the partition (see ``_partitions``).

Each instance is leased on its sentinel row: taking, renewing and committing are writes
conditional on the sentinel's ETag, so only one writer wins.

Committing an episode, in order:

1. One entity-group transaction on the instance's partition, conditional on the sentinel's
   ETag: the new history rows, the sentinel (new length, instance row, lease released),
   deletion of the consumed message rows and of a finished activity's row, new activity
   rows, messages to itself (timers) and outbox rows for messages to other instances. An
   episode larger than one transaction allows (100 rows, 4 MiB) stages its rows in a blob
   instead, which the sentinel names; the staged rows are applied (idempotently) before the
   partition is read again, by whoever reads it first.
   A crash before this step leaves nothing written; a stale worker (lease expired and taken
   over) fails the ETag condition and writes nothing.
2. Each outbox row is delivered to its receiver's partition in one transaction that
   inserts the message row and a ``d-ID`` marker (and creates the receiver's sentinel for a
   start). The marker makes delivery idempotent: a second delivery of the same id fails the
   insert and changes nothing. A crash before or during this step leaves the outbox row,
   which is delivered when the partition is next leased or swept.
3. The delivered outbox rows are deleted. A crash before that only means a redelivery,
   refused by the marker.
4. The ``{hub}Instances`` copy is written if the instance's status changed (queries
   trust only a finished copy and re-read the sentinels of the others), and hints are
   queued. A crash here leaves a stale copy (re-read, as above) or a missing
   hint (found by the sweep).

Completing an activity is one transaction on its instance's partition: the activity row
is deleted (conditional on its ETag, so a worker whose lease was lost writes nothing) and
the result inserted as a message row.

Every message stored in an inbox also changes the sentinel's ETag (an unconditional merge
of one property, in the same transaction, so concurrent messages never conflict). A store
object remembers the sentinels and activity rows it wrote or read last, with their ETags,
and commits an episode without reading the partition first when the fence holds on the
remembered row: if anything changed meanwhile (a message arrived, the lease was taken over),
the ETag differs, the transaction is refused whole, and the commit is tried again after
reading the partition.

Workers share the control partitions through blob leases, balanced among the live workers
and taken over when a worker dies: a worker reads the hints of its partitions' queues and
sweeps its partitions' instances only. That spreads the work; it is not what makes it
correct. The instance's lease on its sentinel is: a worker that lost a partition (or an
instance) meanwhile fails the ETag condition of its next write and writes nothing.

The store class is assembled from one module per concept: ``_core`` (clients, rows),
``_inbox`` (an instance's partition, delivery), ``_dequeue`` (hints, sweeps, instance
leases), ``_partitions`` (partition leases), ``_episodes`` (commits), ``_activities``,
``_instances`` (client operations and queries), ``_workers``, ``_schedules`` and
``_entities``.

Times are decided by the store clock, against due times kept in the rows (a queue's
visibility delay is only a hint). Delivery counts are kept in the rows too, so a message
or activity that keeps failing is given up by the ``max_deliveries`` rule.
"""

from __future__ import annotations

from duratask.backends.azure._activities import ActivityStore
from duratask.backends.azure._entities import EntityStore
from duratask.backends.azure._episodes import EpisodeStore
from duratask.backends.azure._instances import InstanceStore
from duratask.backends.azure._schedules import ScheduleStore
from duratask.backends.azure._workers import WorkerStore


class AzureOrchestrationService(
    EpisodeStore, ActivityStore, InstanceStore, WorkerStore, ScheduleStore, EntityStore
):
    """A task hub in an Azure Storage account (see the module docstring for the layout and
    the order of writes). Open it with :func:`duratask.backends.open_store` and an
    ``azure://`` URL, or build it from a URL here."""

    wakes_all_processes = False

    supports_entities = True

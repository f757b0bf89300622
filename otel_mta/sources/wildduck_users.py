"""WildDuck's user count and the storage its accounts use, from the `users`
collection in WildDuck's MongoDB (catalog/wildduck.yaml, docs/wildduck.md).

Why here: WildDuck's /metrics has neither; its API has them only per user
(`GET /users`, paged: a request per 250 accounts, every account sent whole);
its GELF `quota` lines carry one user's new total when it changes, so a sum
would need a table of every account in the sidecar and would miss accounts
unchanged since the sidecar started. The collection answers both with bounded
cost:

- wildduck.user.count: `estimatedDocumentCount`, read from the collection's
  metadata: no document is read, whatever the number of accounts;
- wildduck.storage.usage: one `$group` summing `storageUsed` (the quota
  counter WildDuck keeps per account). This reads every account, so it is
  bounded three ways: it runs only when the count is at most `max_users`
  (default 200 000: above, it is left out and `check` says why), under
  maxTimeMS, on a secondary by default, and the poller's default interval is
  15 minutes (storage moves slowly).

What the disks hold (messages, attachments) is the MongoDB poller's dbStats
per database (mongodb.data.size / mongodb.storage.size, db.namespace), at
no cost per account.
"""
from __future__ import annotations

from otel_mta.sources.mongodb import mongo_client, mongo_target, unreachable
from otel_mta.sources.poller import Points, PollError, Poller

COLLECTION = "users"


class WildDuckUsersPoller(Poller):
    name = "wildduck_users"

    def __init__(self, pipeline, settings):
        target, _, uri_db = mongo_target(settings.url)
        super().__init__(pipeline, settings, target)
        self.uri = settings.url
        self.database = settings.database or uri_db or "wildduck"
        self.max_users = settings.max_users
        self.resource = pipeline.resources.producer("wildduck")
        self._client = None
        self._rp = None
        self._summary = ""

    @property
    def _max_ms(self) -> int:
        return max(100, int(self.timeout * 1000))

    def _users(self):
        if self._client is None:
            self._client, self._rp = mongo_client(self.uri, self.settings, self.timeout)
        return self._client[self.database].get_collection(COLLECTION, read_preference=self._rp)

    async def collect(self, points: Points) -> None:
        from pymongo import errors
        where = f"{self.database}.{COLLECTION}"
        try:
            users = self._users()
            count = await users.estimated_document_count(maxTimeMS=self._max_ms)
            points.add("wildduck.user.count", self.resource, (), int(count))
            if count > self.max_users:
                self._summary = (f"{where}: {count} users; storage sum left out "
                                 f"(more than max_users {self.max_users})")
                return
            cursor = await users.aggregate(
                [{"$group": {"_id": None, "used": {"$sum": "$storageUsed"}}}], maxTimeMS=self._max_ms)
            rows = await cursor.to_list(1)
        except errors.ServerSelectionTimeoutError as err:
            raise PollError(*unreachable(err)) from None
        except errors.ExecutionTimeout:
            raise PollError("timeout", f"{where}: over maxTimeMS ({self._max_ms} ms)") from None
        except errors.OperationFailure as err:
            if err.code == 18:
                raise PollError("auth", "authentication failed (user/password in the URI)") from None
            if err.code == 13:
                raise PollError("auth", f"not authorized to read {where} (needs read on {self.database})") from None
            raise PollError("error", f"{where}: {str(err).splitlines()[0][:200]}") from None
        except errors.AutoReconnect as err:
            raise PollError("network", str(err).splitlines()[0][:300]) from None
        used = rows[0].get("used") if rows else 0
        used = int(used) if isinstance(used, (int, float)) and not isinstance(used, bool) else 0
        points.add("wildduck.storage.usage", self.resource, (), used)
        self._summary = f"{where}: {count} users, {used} bytes in use"

    def summary(self) -> str:
        return self._summary

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

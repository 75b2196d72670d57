// Durable entities of the JavaScript SDK against `duratask serve`: node entities.js HOST:PORT
// An orchestration signals and calls a class-based entity; the client signals it and reads
// its state. Prints one JSON line with what it saw.
const {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  TaskEntity,
  EntityInstanceId,
  OrchestrationStatus,
} = require("@microsoft/durabletask-js");

const address = process.argv[2];

class Counter extends TaskEntity {
  add(amount) {
    this.state += amount;
    return this.state;
  }
  get() {
    return this.state;
  }
  initializeState() {
    return 0;
  }
}

const countUp = async function* (ctx, key) {
  const id = new EntityInstanceId("counter", key);
  ctx.entities.signalEntity(id, "add", 1);
  const total = yield ctx.entities.callEntity(id, "add", 2);
  return total;
};

async function main() {
  const silent = { error() {}, warn() {}, info() {}, debug() {} };
  const worker = new TaskHubGrpcWorker({ hostAddress: address, logger: silent });
  worker.addOrchestrator(countUp);
  worker.addNamedEntity("counter", () => new Counter());
  await worker.start();
  const client = new TaskHubGrpcClient({ hostAddress: address, logger: silent });
  const id = await client.scheduleNewOrchestration(countUp, "js1");
  const state = await client.waitForOrchestrationCompletion(id, true, 30);
  const out = {
    flow: {
      id,
      status: OrchestrationStatus[state.runtimeStatus],
      output: JSON.parse(state.serializedOutput),
    },
  };
  const signalled = new EntityInstanceId("counter", "js2");
  await client.signalEntity(signalled, "add", 5);
  const deadline = Date.now() + 20000;
  let seen;
  while (Date.now() < deadline) {
    seen = await client.getEntity(signalled);
    if (seen !== undefined) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  out.signalled = seen === undefined ? null : seen.state;
  console.log(JSON.stringify(out));
  await worker.stop();
  await client.stop();
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);

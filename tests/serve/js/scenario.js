// The JavaScript SDK against `duratask serve`: node scenario.js HOST:PORT
// Runs a sequence, a fan-out, an external event; prints one JSON line with the outputs.
const { TaskHubGrpcClient, TaskHubGrpcWorker, whenAll, OrchestrationStatus } = require(
  "@microsoft/durabletask-js",
);

const address = process.argv[2];

const greet = async (_ctx, name) => `Hello ${name}!`;
const square = async (_ctx, n) => n * n;

const sequence = async function* (ctx, names) {
  const out = [];
  for (const name of names) out.push(yield ctx.callActivity(greet, name));
  return out;
};

const fanOut = async function* (ctx, n) {
  const tasks = [];
  for (let i = 0; i < n; i++) tasks.push(ctx.callActivity(square, i));
  const results = yield whenAll(tasks);
  return results.reduce((a, b) => a + b, 0);
};

const approval = async function* (ctx) {
  const value = yield ctx.waitForExternalEvent("approve");
  return { approved: value };
};

async function main() {
  const silent = { error() {}, warn() {}, info() {}, debug() {} };
  const worker = new TaskHubGrpcWorker({ hostAddress: address, logger: silent });
  for (const fn of [sequence, fanOut, approval]) worker.addOrchestrator(fn);
  for (const fn of [greet, square]) worker.addActivity(fn);
  await worker.start();
  const client = new TaskHubGrpcClient({ hostAddress: address, logger: silent });
  const out = {};
  const seq = await client.scheduleNewOrchestration(sequence, ["Tokyo", "Oslo"]);
  const fan = await client.scheduleNewOrchestration(fanOut, 10);
  const ev = await client.scheduleNewOrchestration(approval);
  await client.waitForOrchestrationStart(ev, false, 30);
  await client.raiseOrchestrationEvent(ev, "approve", "yes");
  for (const [name, id] of [["sequence", seq], ["fanOut", fan], ["approval", ev]]) {
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    out[name] = {
      id,
      status: OrchestrationStatus[state.runtimeStatus],
      output: JSON.parse(state.serializedOutput),
    };
  }
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

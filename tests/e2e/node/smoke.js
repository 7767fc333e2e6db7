// KafkaJS smoke test: produce N records to each partition of TOPIC, then
// consume them with a consumer group from the beginning, all through
// BOOTSTRAP. Prints one JSON line with what was produced and consumed;
// exits non-zero on any error or after TIMEOUT_MS.
//
//   node smoke.js BOOTSTRAP TOPIC PARTITIONS N [TIMEOUT_MS]
//
// KPR_SASL='{"mechanism":"scram-sha-256","username":"u","password":"p"}'
// in the environment authenticates with SASL (over plaintext);
// KPR_SASL='{"mechanism":"oauthbearer","token":"<JWT>"}' sends that bearer
// token (KafkaJS asks an oauthBearerProvider for it).
// With KPR_E2E_SSL_CA set (a PEM file), it connects over TLS trusting that
// CA; KPR_E2E_SSL_CERT and KPR_E2E_SSL_KEY add a client certificate.
'use strict';

const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

function sslOptions(env) {
  if (!env.KPR_E2E_SSL_CA) return undefined;
  const ssl = { ca: [fs.readFileSync(env.KPR_E2E_SSL_CA, 'utf8')], rejectUnauthorized: true };
  if (env.KPR_E2E_SSL_CERT) {
    ssl.cert = fs.readFileSync(env.KPR_E2E_SSL_CERT, 'utf8');
    ssl.key = fs.readFileSync(env.KPR_E2E_SSL_KEY, 'utf8');
  }
  return ssl;
}

function saslOptions(sasl) {
  if (sasl.mechanism !== 'oauthbearer') return sasl;
  return { mechanism: 'oauthbearer', oauthBearerProvider: async () => ({ value: sasl.token }) };
}

const [bootstrap, topic, partitionsArg, nArg, timeoutArg] = process.argv.slice(2);
if (!bootstrap || !topic || !partitionsArg || !nArg) {
  console.error('usage: node smoke.js BOOTSTRAP TOPIC PARTITIONS N [TIMEOUT_MS]');
  process.exit(2);
}
const partitions = Number(partitionsArg);
const n = Number(nArg);
const timeoutMs = Number(timeoutArg || 60000);

const timer = setTimeout(() => {
  console.error(`smoke.js: timed out after ${timeoutMs} ms`);
  process.exit(3);
}, timeoutMs);

async function main() {
  const kafka = new Kafka({
    clientId: 'kpr-e2e-kafkajs',
    brokers: [bootstrap],
    ssl: sslOptions(process.env),
    logLevel: logLevel.WARN,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 3 },
    ...(process.env.KPR_SASL ? { sasl: saslOptions(JSON.parse(process.env.KPR_SASL)) } : {}),
  });

  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let p = 0; p < partitions; p++) {
    for (let i = 0; i < n; i++) {
      messages.push({ partition: p, key: `k${p}-${i}`, value: `${p}:${i}:kafkajs` });
    }
  }
  const produced = await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({
    groupId: `kpr-e2e-kafkajs-${process.pid}`,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve, reject) => {
    consumer
      .run({
        eachMessage: async ({ partition, message }) => {
          consumed.push([partition, Number(message.offset), message.value.toString()]);
          if (consumed.length >= messages.length) resolve();
        },
      })
      .catch(reject);
  });
  // Anything extra (duplicates) would arrive within a second.
  await new Promise((r) => setTimeout(r, 1000));
  await consumer.disconnect();

  console.log(JSON.stringify({
    produced: produced.map((r) => [r.partition, Number(r.baseOffset), r.errorCode]),
    consumed,
  }));
}

main()
  .then(() => {
    clearTimeout(timer);
    process.exit(0);
  })
  .catch((err) => {
    console.error(`smoke.js: ${err.stack || err}`);
    process.exit(1);
  });

#!/usr/bin/env node
// A Tongban hall client in Node.js, built on the .proto files exactly as they are in
// proto/tongban/v1: @grpc/proto-loader loads them at runtime for the gRPC stub, and protobufjs
// loads the same files to serialise each Command, whose bytes are then signed with the hall's
// Ed25519 key. No generated code, no Python.
//
// No personal data is ever signed: the Submit's applicant is three salted commitments
//   SHA-256("tongban/commitment/v1" || 0x00 || field path || 0x00 || salt || UTF-8 value)
// (field paths "submit.applicant.name", ".id_number", ".phone"; a fresh 32-byte random salt per
// field), and the clear values travel beside the signed bytes in SignedCommand.personal. Every
// command names the node it is for (CommandHeader.node).
//
// Steps (one JSON object per line on stdout):
//   list_items        ListItems, and how many items the catalogue has
//   submit            Submit a signed Command{header, submit}; the reply's case_id and version, the
//                     SHA-256 of the signed bytes and the commitments (hex; never the clear values)
//   verify_signature  the bytes this client signed for the submit verify (node:crypto Ed25519)
//                     with the hall's public key; the key (base64, raw 32 bytes)
//   accept            Accept the case with another signed command
//   get_case          GetCase; the case's state
//   bad_signature     Withdraw the case with a signature that does not match the bytes; the status
//   done              everything went as expected
// Exit status 0 on success; otherwise 1, with {"step": "error", ...} on stdout and a message on stderr.
//
// Usage: node client.mjs --target localhost:PORT --ca ca.pem --cert hall.pem --key hall.key \
//          --signing-key hall.signing.key --hall-id HALL --region 430902104000 [--node tongban/43]
// Every option can also come from the environment: TONGBAN_TARGET, TONGBAN_CA, TONGBAN_CERT,
// TONGBAN_KEY, TONGBAN_SIGNING_KEY, TONGBAN_HALL_ID, TONGBAN_REGION, TONGBAN_NODE,
// TONGBAN_OPERATOR, TONGBAN_ITEM, TONGBAN_SERVER_NAME, TONGBAN_PROTO_DIR, TONGBAN_DEADLINE_MS.
// They are this test client's own, not product settings: the node and the adapters never read
// them, and a node refuses TONGBAN_* variables it does not know (see README.md).

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_PROTO_DIR = path.resolve(HERE, "..", "..", "..", "proto");
const SERVICE_PROTO = "tongban/v1/case_exchange.proto";

const OPTIONS = {
  target: { env: "TONGBAN_TARGET", help: "host:port of the node" },
  ca: { env: "TONGBAN_CA", help: "CA certificate (PEM) the node's certificate chains to" },
  cert: { env: "TONGBAN_CERT", help: "the hall's TLS client certificate (PEM)" },
  key: { env: "TONGBAN_KEY", help: "the hall's TLS client private key (PEM)" },
  "signing-key": { env: "TONGBAN_SIGNING_KEY", help: "the hall's Ed25519 signing key (PKCS#8 PEM)" },
  "hall-id": { env: "TONGBAN_HALL_ID", help: "the hall's id" },
  region: { env: "TONGBAN_REGION", help: "the hall's 12-digit region code" },
  node: {
    env: "TONGBAN_NODE",
    default: "",
    help: "log origin of the node the commands are for (default tongban/ + the region's first two digits)",
  },
  operator: { env: "TONGBAN_OPERATOR", default: "js-client", help: "operator name in the header" },
  item: { env: "TONGBAN_ITEM", default: "200202001000", help: "service item to submit" },
  "server-name": { env: "TONGBAN_SERVER_NAME", default: "", help: "TLS name override" },
  "proto-dir": { env: "TONGBAN_PROTO_DIR", default: DEFAULT_PROTO_DIR, help: "include dir" },
  "deadline-ms": { env: "TONGBAN_DEADLINE_MS", default: "10000", help: "per-call deadline" },
};

class Failure extends Error {
  constructor(step, message, extra = {}) {
    super(message);
    this.step = step;
    this.extra = extra;
  }
}

function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

function readConfig() {
  const { values } = parseArgs({
    options: Object.fromEntries(Object.keys(OPTIONS).map((name) => [name, { type: "string" }])),
    strict: true,
  });
  const config = {};
  const missing = [];
  for (const [name, spec] of Object.entries(OPTIONS)) {
    const value = values[name] ?? process.env[spec.env] ?? spec.default;
    if (value === undefined || value === null) missing.push(`--${name} (or ${spec.env}): ${spec.help}`);
    config[name] = value;
  }
  if (missing.length) throw new Failure("config", `missing options:\n  ${missing.join("\n  ")}`);
  if (!/^\d{12}$/.test(config.region)) {
    throw new Failure("config", `--region must be a 12-digit region code, got ${config.region}`);
  }
  config.node = config.node || `tongban/${config.region.slice(0, 2)}`;
  return config;
}

// The commitment to one personal field (docs/wire-api.md, adapters/sdk.py `commitment`).
const COMMITMENT_TAG = Buffer.from("tongban/commitment/v1", "utf8");
const ZERO = Buffer.from([0]);

function commitment(fieldPath, salt, value) {
  return crypto
    .createHash("sha256")
    .update(Buffer.concat([COMMITMENT_TAG, ZERO, Buffer.from(fieldPath, "utf8"), ZERO, salt,
      Buffer.from(value, "utf8")]))
    .digest();
}

// Commitments to an applicant (fresh random salts) for the signed bytes, and the clear values
// with their salts for SignedCommand.personal.
function commitApplicant(applicant, action = "submit") {
  const commitments = {};
  const personal = [];
  for (const field of ["name", "id_number", "phone"]) {
    const fieldPath = `${action}.applicant.${field}`;
    const salt = crypto.randomBytes(32);
    commitments[field] = commitment(fieldPath, salt, applicant[field]);
    personal.push({ field: fieldPath, value: applicant[field], salt });
  }
  return { commitments, personal };
}

// GB 11643-1999: the 18th character of a resident ID number.
function idCheckCharacter(first17) {
  if (!/^\d{17}$/.test(first17)) throw new Error(`need 17 digits, got ${first17}`);
  let sum = 0;
  for (let i = 0; i < 17; i += 1) sum += Number(first17[i]) * (2 ** (17 - i) % 11);
  return "10X98765432"[sum % 11];
}

function read(file, what) {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new Failure("config", `cannot read ${what} ${file}: ${error.message}`);
  }
}

// The gRPC stub, from the .proto files loaded at runtime.
function loadService(config) {
  const definition = protoLoader.loadSync(SERVICE_PROTO, {
    includeDirs: [config["proto-dir"]],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const tongban = grpc.loadPackageDefinition(definition).tongban.v1;
  const credentials = grpc.credentials.createSsl(
    read(config.ca, "CA certificate"),
    read(config.key, "TLS key"),
    read(config.cert, "TLS certificate"),
  );
  const channelOptions = config["server-name"]
    ? { "grpc.ssl_target_name_override": config["server-name"] }
    : {};
  return new tongban.CaseExchange(config.target, credentials, channelOptions);
}

// The Command message type, from the same .proto files, for serialising what is signed.
function loadCommandType(config) {
  // google/protobuf/timestamp.proto is built into protobufjs; descriptor.proto (imported by
  // options.proto) ships with it as JSON and is registered here, as proto-loader does.
  if (!protobuf.common.get("google/protobuf/descriptor.proto")) {
    const descriptor = createRequire(import.meta.url)("protobufjs/google/protobuf/descriptor.json");
    protobuf.common("descriptor", descriptor.nested.google.nested.protobuf.nested);
  }
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) =>
    target.startsWith("google/protobuf/") ? target : path.join(config["proto-dir"], target);
  root.loadSync(SERVICE_PROTO, { keepCase: true });
  root.resolveAll();
  return root.lookupType("tongban.v1.Command");
}

function call(client, method, request, deadlineMs) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: new Date(Date.now() + deadlineMs) }, (error, reply) => {
      if (error) reject(error);
      else resolve(reply);
    });
  });
}

function statusName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);
}

async function main() {
  const config = readConfig();
  const deadlineMs = Number(config["deadline-ms"]);
  const client = loadService(config);
  const Command = loadCommandType(config);
  const signingKey = crypto.createPrivateKey(read(config["signing-key"], "signing key"));
  if (signingKey.asymmetricKeyType !== "ed25519") {
    throw new Failure("config", `signing key is ${signingKey.asymmetricKeyType}, not ed25519`);
  }

  const publicKey = crypto.createPublicKey(signingKey);
  // The raw 32-byte key: the last 32 bytes of its SubjectPublicKeyInfo DER.
  const rawPublicKey = publicKey.export({ format: "der", type: "spki" }).subarray(-32);

  // Serialise a Command with protobufjs and sign exactly those bytes. `personal`: the clear
  // values the command commits to, sent beside the bytes (never signed).
  const sign = (action, body, personal = []) => {
    const now = Date.now();
    const object = {
      header: {
        idempotency_key: crypto.randomUUID(),
        hall_id: config["hall-id"],
        operator: config.operator,
        region: config.region,
        issued_at: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1e6 },
        node: config.node,
        deferred: false,
      },
      [action]: body,
    };
    const problem = Command.verify(object);
    if (problem) throw new Failure(action, `invalid Command: ${problem}`);
    const bytes = Buffer.from(Command.encode(Command.fromObject(object)).finish());
    return { command: bytes, signature: crypto.sign(null, bytes, signingKey), personal };
  };

  const mutate = async (step, method, signed) => {
    try {
      return await call(client, method, signed, deadlineMs);
    } catch (error) {
      throw new Failure(step, `${method} failed: ${statusName(error.code)} ${error.details ?? ""}`, {
        code: error.code,
      });
    }
  };

  try {
    // 1. The catalogue.
    let items;
    try {
      items = await call(client, "ListItems", {}, deadlineMs);
    } catch (error) {
      throw new Failure("list_items", `ListItems failed: ${statusName(error.code)} ${error.details}`, {
        code: error.code,
      });
    }
    emit({ step: "list_items", count: items.items.length, edition: items.edition });

    // 2. Submit: commitments in the signed bytes, the clear values beside them.
    const first17 = "43090219560312002";
    const applicant = {
      name: "刘秀英",
      id_number: first17 + idCheckCharacter(first17),
      phone: "13907370001",
    };
    const { commitments, personal } = commitApplicant(applicant);
    const material = Buffer.from("%PDF-1.4\n% Tongban JS client test material\n");
    const submitCommand = sign(
      "submit",
      {
        item_code: config.item,
        applicant: commitments,
        materials: [
          {
            name: "居民身份证复印件",
            sha256: crypto.createHash("sha256").update(material).digest("hex"),
            media_type: "application/pdf",
            size: material.length,
          },
        ],
      },
      personal,
    );
    for (const value of Object.values(applicant)) {
      if (submitCommand.command.includes(Buffer.from(value, "utf8"))) {
        throw new Failure("submit", "a clear personal value is in the signed bytes");
      }
    }
    const submitted = await mutate("submit", "Submit", submitCommand);
    const caseId = submitted.case_id;
    emit({
      step: "submit",
      case_id: caseId,
      version: Number(submitted.version),
      command_sha256: crypto.createHash("sha256").update(submitCommand.command).digest("hex"),
      commitments: Object.fromEntries(
        Object.entries(commitments).map(([field, digest]) => [field, digest.toString("hex")]),
      ),
    });

    // 3. The bytes this client signed verify with the hall's public key (what the node and any
    // auditor check).
    const verified = crypto.verify(null, submitCommand.command, publicKey, submitCommand.signature);
    emit({ step: "verify_signature", ok: verified, public_key: rawPublicKey.toString("base64") });
    if (!verified) throw new Failure("verify_signature", "the submit's signature does not verify");

    // 4. Accept, then read the case back.
    const accepted = await mutate("accept", "Accept", sign("accept", { case_id: caseId }));
    emit({ step: "accept", case_id: accepted.case_id, version: Number(accepted.version) });
    let view;
    try {
      view = await call(client, "GetCase", { case_id: caseId }, deadlineMs);
    } catch (error) {
      throw new Failure("get_case", `GetCase failed: ${statusName(error.code)} ${error.details}`, {
        code: error.code,
      });
    }
    emit({ step: "get_case", case_id: view.case_id, state: view.state, version: Number(view.version) });
    if (view.state !== "CASE_STATE_ACCEPTED") {
      throw new Failure("get_case", `expected CASE_STATE_ACCEPTED, got ${view.state}`);
    }

    // 5. A withdrawal (allowed from ACCEPTED) whose signature does not match its bytes.
    const tampered = sign("withdraw", { case_id: caseId, reason: "tampered signature" });
    tampered.signature[0] ^= 0x01;
    try {
      const reply = await call(client, "Withdraw", tampered, deadlineMs);
      emit({ step: "bad_signature", code: 0, version: Number(reply.version) });
      throw new Failure("bad_signature", "a command with a wrong signature was accepted");
    } catch (error) {
      if (error instanceof Failure) throw error;
      emit({
        step: "bad_signature",
        code: error.code,
        status: statusName(error.code),
        details: error.details,
      });
      if (error.code !== grpc.status.UNAUTHENTICATED) {
        throw new Failure("bad_signature", `expected UNAUTHENTICATED, got ${statusName(error.code)}`);
      }
    }
    emit({ step: "done", ok: true });
  } finally {
    client.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    const step = error instanceof Failure ? error.step : "unexpected";
    emit({ step: "error", failed_step: step, message: error.message, ...(error.extra ?? {}) });
    process.stderr.write(`tongban js client: ${step}: ${error.message}\n`);
    if (!(error instanceof Failure)) process.stderr.write(`${error.stack}\n`);
    process.exit(1);
  },
);

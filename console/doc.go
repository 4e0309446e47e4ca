// Package console is shardkv's web console: a read-only view of the
// cluster that refreshes itself, served by every controller process (and
// `shardkv dev`) on its --http address next to /metrics.
//
// The page (static/, embedded in the binary: plain HTML, CSS and
// JavaScript, no build step and nothing fetched from the network) polls one
// JSON document, /api/console/state, once a second. A Console builds that
// document in the background, also once a second, from the same public
// APIs an operator's tools use: the controller's latest configuration
// (controllerpb Query) and every replica's Status (kvpb: raft role, term,
// commit and applied index, shard states, bytes pulled of shards in
// flight, request latencies, disk usage). Nothing in the console changes
// the cluster.
//
// The document holds:
//   - the shard map: each shard's owner in the latest configuration and its
//     state at the owner's leader (serving, pulling, offering, confirming,
//     held, restoring; "waiting" until the owner holds it), with the bytes
//     pulled so far of a shard in flight;
//   - groups and replicas: role, term, commit and applied index, lag behind
//     the leader's commit index, reachability, data size;
//   - the configuration history: each configuration's number and what
//     changed (groups joined or left, shards moved), when this console first
//     saw it and how long it took until every shard it assigns was served
//     by its owner (only for configurations it watched settle);
//   - traffic: client requests per second and their p99 latency per group,
//     over the last five minutes (differences of the replicas' cumulative
//     latency histograms between polls, as Prometheus' rate does).
package console

// Package controllerpb is the shard controller's API (service
// shardkv.controller.v1.Controller: Join, Leave, Move, SetReplicas, Query,
// Watch, OpenSession), generated from controller.proto, with its typed
// errors (Errors, the wire table).
package controllerpb

// Package controllerpb is the shard controller's API (service
// shardkv.controller.v1.Controller: Join, Leave, Move, SetReplicas, Query,
// Watch, OpenSession; AuthChange, Authenticate, AuthState for auth),
// generated from controller.proto, with its typed errors (Errors, the wire
// table). Go programs use package controller/ctlclient.
package controllerpb

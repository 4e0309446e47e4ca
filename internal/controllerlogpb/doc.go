// Package controllerlogpb is what the controller's replicas write down: its
// log commands (Command) and snapshot image (Image). Not client API.
package controllerlogpb

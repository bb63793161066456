//go:build tools

// Package tools pins the etcd main package (the module root of
// go.etcd.io/etcd/server/v3) so `go mod tidy` keeps its dependencies.
package tools

import _ "go.etcd.io/etcd/server/v3"

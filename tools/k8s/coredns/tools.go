//go:build tools

// Package tools records the main package build.sh compiles (coredns, the module's
// root package), so that `go mod tidy` keeps its dependencies in go.mod/go.sum.
package tools

import _ "github.com/coredns/coredns"

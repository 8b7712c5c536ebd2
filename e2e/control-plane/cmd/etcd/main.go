// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3) at the version the
// pinned kube-apiserver's client was built against, for the end-to-end control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

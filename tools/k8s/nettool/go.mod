// A tiny static test program for tools/k8s/node-smoke.sh (packed as an image by
// tools/images/pack.py): standard library only.
module chronik.io/tools/k8s/nettool

go 1.24.0

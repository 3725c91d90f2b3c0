// Package helm holds the tests of the Helm chart in deploy/helm/tslm,
// beside it rather than in it so that no Go file is packaged with the
// chart. They render the chart with the real helm, built from the module
// proxy (helm itself is not a dependency of this module), decode every
// object strictly into Kubernetes' API types, check the deployment's shape,
// and load the rendered config file and variables with the gateway's own
// config code. The package has no code of its own.
package helm

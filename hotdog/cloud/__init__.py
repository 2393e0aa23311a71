"""Google Cloud: Vertex AI training (inside a job and submitting one), secrets, model publishing.

- :mod:`hotdog.cloud.vertex_runtime`: what training does inside a Vertex AI job (its directories,
  resuming after preemption, the W&B key from Secret Manager).
- :mod:`hotdog.cloud.cluster`: Lightning's view of a multi-replica Vertex job (``CLUSTER_SPEC``).
- :mod:`hotdog.cloud.vertex_job`: build, validate and submit a CustomJob (``hotdog-vertex``).
- :mod:`hotdog.cloud.publish`: versioned model releases on gs:// and pointing services at one.

Google's client libraries are imported only where a function needs them (extra ``gcp``), so
training and serving never load them outside the cloud.
"""

"""The node's web pages: the supervisors' dashboard and the public guide screen of each hall."""

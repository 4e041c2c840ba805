"""What the tests share: the typed lab handle (``lab``), the workloads they migrate
(``workloads``), the engine and the docker CLI on the lab (``engine``), the Cloudify CLI
(``cfy``) and running commands (``process``)."""

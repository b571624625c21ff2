"""`python -m evo_servers`: PostgreSQL + MLflow on loopback for a shared study (docs/scale-out.md)."""
from evo_servers import main

main()

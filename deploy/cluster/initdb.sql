-- The cluster profile's database (docker-compose.yml, profile "cluster"): its nodes keep
-- their log apart from the single node's. Runs once, when the PostgreSQL volume is created.
CREATE DATABASE ledger_cluster;

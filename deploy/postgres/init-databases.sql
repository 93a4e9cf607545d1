-- One database per DC of the local stack (docker compose runs this on first start;
-- `cargo xtask up` creates the same names itself).
CREATE DATABASE meerkat_dc1;
CREATE DATABASE meerkat_dc2;
CREATE DATABASE meerkat_dc3;

// The user Hilo's services connect as: read and write on Hilo's two databases, nothing else (no
// user administration, no other database). The mongo image runs this once, on first start with
// an empty data directory, after creating the root user of MONGO_INITDB_ROOT_USERNAME.
const env = process.env;
db.getSiblingDB("admin").createUser({
  user: env.HILO_MONGO_USERNAME,
  pwd: env.HILO_MONGO_PASSWORD,
  roles: [
    { role: "readWrite", db: env.HILO_MONGODB_DATABASE },
    { role: "readWrite", db: env.HILO_MONGODB_KEYS_DATABASE },
  ],
});

//! The files a SQLite store and the daemon's secrets live in are private
//! to the daemon's user, whatever the umask: folders 0700, files 0600.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use weir_store::Store;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_new_data_folder_and_its_database_are_private() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("deep/.weir");
    let db = data.join("weir.db");
    let store = Store::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("store");
    // A write, so SQLite has made its write-ahead log and shared memory.
    store
        .promote("m", 1, "a", "t", chrono::Utc::now())
        .await
        .ok();
    assert_eq!(mode(&data), 0o700, "the data folder");
    assert_eq!(
        mode(&dir.path().join("deep")),
        0o700,
        "a folder made for it"
    );
    for file in ["weir.db", "weir.db-wal", "weir.db-shm"] {
        let path = data.join(file);
        if file == "weir.db" || path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    assert!(
        data.join("weir.db-wal").exists(),
        "WAL mode makes a -wal file"
    );
    store.close().await;

    weir_store::secret_file(&dir.path().join("other/token")).expect("token");
    assert_eq!(mode(&dir.path().join("other")), 0o700);
    assert_eq!(mode(&dir.path().join("other/token")), 0o600);

    // A folder that exists keeps the mode its owner gave it.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("folder");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let store = Store::connect(&format!("sqlite://{}/weir.db", shared.display()))
        .await
        .expect("store");
    assert_eq!(mode(&shared), 0o750);
    assert_eq!(mode(&shared.join("weir.db")), 0o600);
    store.close().await;
}

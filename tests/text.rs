//! SST-2 parsing (headers, bad lines), the word vocabulary, padding and
//! length bucketing, and the real SST-2 when it is present.

use shadergrad::data::text::{bucketed_batches, pad_batch, Sst2, TextDataset, WordVocab};
use shadergrad::Result;

fn tsv(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sg-text-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("data.tsv");
    std::fs::write(&path, body).expect("write");
    path
}

#[test]
fn reads_either_column_order_and_names_bad_lines() -> Result<()> {
    let a = TextDataset::read_tsv(&tsv("a", "label\tsentence\n1\tgood film .\n0\tbad .\n"))?;
    let b = TextDataset::read_tsv(&tsv("b", "content\tlabel\ngood film .\t1\n\nbad .\t0\n"))?;
    assert_eq!(a, b);
    assert_eq!(a.labels, vec![1, 0]);
    assert_eq!(a.sentences[0], "good film .");
    let err = |body: &str, name: &str| {
        TextDataset::read_tsv(&tsv(name, body))
            .expect_err("refused")
            .to_string()
    };
    assert!(
        err("label\tsentence\n1\tok\n2\tbad\n", "c").contains("line 3: label \"2\" is not 0 or 1")
    );
    assert!(err("text\tlabel\nx\t1\n", "d").contains("lacks a `label` and a `sentence`"));
    assert!(err("label\tsentence\n1\n", "e").contains("line 2: 1 fields"));
    assert!(err("", "f").contains("empty file"));
    assert!(err("label\tsentence\n", "g").contains("no examples"));
    let missing = TextDataset::read_tsv(std::path::Path::new("/no/such/sst2.tsv")).unwrap_err();
    assert!(missing.to_string().contains("/no/such/sst2.tsv"));
    assert!(Sst2::open(std::path::Path::new("/no/such/dir"))
        .unwrap_err()
        .to_string()
        .contains("--data"));
    Ok(())
}

#[test]
fn vocabulary_ranks_by_count_and_maps_unknown_words() {
    let s: Vec<String> = ["the film , the end", "The plot", "a film"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let v = WordVocab::build(&s, 1, 100);
    assert_eq!(&v.words[..4], ["[PAD]", "[UNK]", "the", "film"]);
    assert_eq!(
        v.encode("The FILM zebra", 10),
        vec![2, 3, WordVocab::UNKNOWN]
    );
    assert_eq!(v.encode("the the the", 2), vec![2, 2], "truncated");
    assert_eq!(
        v.encode("   ", 5),
        vec![WordVocab::UNKNOWN],
        "empty sentence"
    );
    let small = WordVocab::build(&s, 2, 100);
    assert_eq!(small.words, ["[PAD]", "[UNK]", "the", "film"]);
    assert_eq!(WordVocab::build(&s, 1, 3).len(), 3);
    assert_eq!(WordVocab::from_words(v.words.clone()), v);
}

#[test]
fn padding_and_bucketing() -> Result<()> {
    let b = pad_batch(&[&[5, 6, 7], &[8]], &[1, 0])?;
    assert_eq!(b.ids.shape(), &[2, 3]);
    assert_eq!(b.ids.to_vec_i32()?, vec![5, 6, 7, 8, 0, 0]);
    assert_eq!(b.mask.to_vec()?, vec![1., 1., 1., 1., 0., 0.]);
    assert_eq!(b.labels.to_vec_i32()?, vec![1, 0]);
    let lengths: Vec<usize> = (0..1000).map(|i| 1 + (i * 7919) % 50).collect();
    let padding = |batches: &[Vec<usize>]| -> usize {
        batches
            .iter()
            .map(|bt| {
                let m = bt.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                bt.iter().map(|&i| m - lengths[i]).sum::<usize>()
            })
            .sum()
    };
    let plain = bucketed_batches(&lengths, 32, 1, 3);
    let bucketed = bucketed_batches(&lengths, 32, 20, 3);
    for bs in [&plain, &bucketed] {
        let mut seen: Vec<usize> = bs.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>(), "each example once");
    }
    assert!(
        padding(&bucketed) * 5 < padding(&plain),
        "bucketing pads {} vs {}",
        padding(&bucketed),
        padding(&plain)
    );
    assert_ne!(bucketed_batches(&lengths, 32, 20, 4), bucketed, "seeded");
    Ok(())
}

/// The shared copy of SST-2 (skipped with a note when absent).
#[test]
fn real_sst2_when_present() -> Result<()> {
    let Ok(dir) = Sst2::locate(None) else {
        eprintln!("skipping: SST-2 not found");
        return Ok(());
    };
    let data = Sst2::open(&dir)?;
    assert_eq!((data.train.len(), data.dev.len()), (67_349, 872));
    let positive = data.dev.labels.iter().filter(|&&l| l == 1).count();
    assert_eq!(positive, 444);
    let vocab = WordVocab::build(&data.train.sentences, 1, 50_000);
    assert!(vocab.len() > 10_000, "{}", vocab.len());
    Ok(())
}

#[test]
fn sample_is_a_seeded_subset_in_order() {
    let data = TextDataset {
        sentences: (0..100).map(|i| format!("s{i}")).collect(),
        labels: (0..100).map(|i| i % 2).collect(),
    };
    let a = data.sample(10, 3);
    assert_eq!(a, data.sample(10, 3));
    assert_ne!(a, data.sample(10, 4));
    assert_eq!(a.len(), 10);
    let idx: Vec<usize> = a
        .sentences
        .iter()
        .map(|s| s[1..].parse().unwrap())
        .collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{idx:?}");
    for (i, l) in idx.iter().zip(&a.labels) {
        assert_eq!(*l, (*i % 2) as i32);
    }
    assert_eq!(data.sample(500, 1), data);
}

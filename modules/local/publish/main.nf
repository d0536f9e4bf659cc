/*
 * Publishes one task's outputs into --outdir, atomically: each file is hard-linked (or copied, or symlinked:
 * task.ext.mode) to a hidden temporary name in its target folder, then renamed over the old file. A reader
 * sees the old file or the new one, never a part; a kill leaves at most a hidden `.<name>.publishing`, which
 * the next run's FINALISE_OUTDIR removes. `cache false`: it runs on every run, -resume included, so what is
 * published is always what this run computed, whether a task ran now or was taken from the cache.
 *
 * `items` are files or folders; `targets` the folder (relative to outdir) each goes into: a file keeps its
 * name, a folder's files keep their paths below it.
 */
process PUBLISH {
    tag "${meta.id}"
    label 'process_single'
    cache false

    input:
    tuple val(meta), path(items, stageAs: 'publish/?/*'), val(targets)
    val outdir

    output:
    path 'published.txt', emit: published

    when:
    task.ext.when == null || task.ext.when

    script:
    publishScript(items instanceof List ? items : [items], targets, outdir, task.ext.mode ?: 'link')

    stub:
    publishScript(items instanceof List ? items : [items], targets, outdir, task.ext.mode ?: 'link')
}

def publishScript(items, targets, outdir, mode) {
    def calls = [items, targets].transpose().collect { item, target -> "publish_item '${item}' '${target}'" }.join('\n')
    """
    outdir='${outdir}'
    mode='${mode}'
    : > published.txt

    # publish_one SOURCE_FILE DEST (relative to outdir)
    publish_one() {
        dest="\$outdir/\$2"
        dir="\$(dirname "\$dest")"
        tmp="\$dir/.\$(basename "\$dest").publishing"
        printf '%s\\n' "\$2" >> published.txt
        # already this run's file (the same inode, link target, or copy of the same size and time): nothing to do
        case "\$mode" in
            copy)    [ -f "\$dest" ] && [ "\$(stat -L -c %s.%Y "\$1")" = "\$(stat -c %s.%Y "\$dest")" ] && return 0 ;;
            symlink) [ -L "\$dest" ] && [ "\$(readlink "\$dest")" = "\$(readlink -f "\$1")" ] && return 0 ;;
            *)       [ "\$1" -ef "\$dest" ] && return 0 ;;
        esac
        mkdir -p "\$dir"
        rm -f "\$tmp"
        case "\$mode" in
            copy)    cp -L --preserve=timestamps "\$1" "\$tmp"; sync "\$tmp" ;;
            symlink) ln -s "\$(readlink -f "\$1")" "\$tmp" ;;
            *)       ln -L "\$1" "\$tmp" ;;
        esac
        mv -fT "\$tmp" "\$dest"
    }

    # publish_item FILE_OR_FOLDER TARGET_FOLDER
    publish_item() {
        if [ -d "\$1" ]; then
            (cd -P "\$1" && find -L . -type f ! -name '.*' | sed 's|^\\./||' | sort) | while IFS= read -r rel; do
                publish_one "\$1/\$rel" "\$2/\$rel"
            done
        else
            publish_one "\$1" "\$2/\$(basename "\$1")"
        fi
    }

    ${calls}
    sed -i 's|^\\./||; s|//*|/|g' published.txt
    """
}
